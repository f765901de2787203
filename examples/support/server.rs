//! The request handler and the demo traffic shared by the `tokio_server`,
//! `smol_server` and `async_std_server` examples: written once, with no
//! runtime named anywhere, because a `Context` works on every executor.
//!
//! Requests are simulated in-process (no sockets). Each gets its own context:
//! a child of the server's, with the request's id as a value and a
//! per-request timeout. The handler stops at the first of: its work is done,
//! its timeout passes, the server shuts down.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use cancelctx::{Cause, Context, Error};

/// A spawned task's join handle, as the scenario sees it.
pub(crate) type Join = Pin<Box<dyn Future<Output = Response> + Send + 'static>>;

/// What a request asks for.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Work {
    /// Answers at once.
    Quick,
    /// CPU-bound work in many small chunks: far more than any budget allows.
    Crunch { chunks: u64 },
    /// Waits on a (simulated) backend that takes `latency`.
    Backend { latency: Duration },
}

/// One request: an id, a budget (the per-request timeout) and the work.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Request {
    pub(crate) id: u32,
    pub(crate) budget: Duration,
    pub(crate) work: Work,
}

/// What the handler answered, and how long it took.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) id: u32,
    pub(crate) result: Result<u64, Error>,
    pub(crate) cause: Option<String>,
    pub(crate) took: Duration,
}

/// A request-scoped value: handlers deep in the call tree can read it.
struct RequestId(u32);

/// Handles one request under `server`'s context.
pub(crate) async fn handle(server: Context, request: Request) -> Response {
    let start = Instant::now();
    let (ctx, _guard) = server
        .with_value(RequestId(request.id))
        .with_timeout(request.budget);
    let result = match request.work {
        Work::Quick => Ok(u64::from(ctx.value::<RequestId>().map_or(0, |id| id.0))),
        Work::Crunch { chunks } => crunch(&ctx, chunks).await,
        // The backend call is any future: `run` drops it when the context ends.
        Work::Backend { latency } => ctx.run(backend(latency)).await,
    };
    Response {
        id: request.id,
        result,
        cause: ctx.cause().map(|cause| cause.to_string()),
        took: start.elapsed(),
    }
    // `_guard` dropped: the request's context, and anything derived from it,
    // ends here even when the work finished early.
}

/// CPU-bound work, cooperatively canceled: `is_done()` is one atomic load,
/// cheap enough to check every chunk. Yielding between chunks lets the other
/// requests on this executor thread run.
async fn crunch(ctx: &Context, chunks: u64) -> Result<u64, Error> {
    let mut acc = 0u64;
    for chunk in 0..chunks {
        if ctx.is_done() {
            return Err(ctx.err().expect("done"));
        }
        for i in 0..2_000u64 {
            acc = std::hint::black_box(acc.wrapping_mul(31).wrapping_add(chunk ^ i));
        }
        yield_now().await;
    }
    Ok(acc)
}

/// A slow backend, simulated with the crate's own timer so that no runtime
/// timer is needed: this sleep never ends early, only when `latency` passes.
async fn backend(latency: Duration) -> u64 {
    Context::background()
        .sleep(latency)
        .await
        .expect("a root never ends");
    42
}

/// Yields to the executor once (works on every executor).
async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await;
}

/// The demo traffic: four requests in flight at once, then a shutdown. Checks
/// every outcome and returns the responses in request order.
///
/// `spawn` starts a handler as a task of the executor under demonstration.
pub(crate) async fn serve_demo_traffic(
    spawn: impl Fn(Pin<Box<dyn Future<Output = Response> + Send>>) -> Join,
) -> Vec<Response> {
    let started = Instant::now();
    let (server, shutdown) = Context::background().with_cancel();
    let requests = [
        Request {
            id: 1,
            budget: Duration::from_secs(5),
            work: Work::Quick,
        },
        // Seconds of CPU; its 30 ms budget stops it.
        Request {
            id: 2,
            budget: Duration::from_millis(30),
            work: Work::Crunch { chunks: 10_000_000 },
        },
        // A 10 s backend call; its 40 ms budget abandons it.
        Request {
            id: 3,
            budget: Duration::from_millis(40),
            work: Work::Backend {
                latency: Duration::from_secs(10),
            },
        },
        // A long budget: still running when the server shuts down.
        Request {
            id: 4,
            budget: Duration::from_secs(60),
            work: Work::Backend {
                latency: Duration::from_secs(10),
            },
        },
    ];
    let mut handles: Vec<Join> = requests
        .iter()
        .map(|request| spawn(Box::pin(handle(server.clone(), *request))))
        .collect();
    let last = handles.pop().expect("four requests");
    let mut responses = Vec::new();
    for handle in handles {
        responses.push(handle.await);
    }
    // Requests 1-3 are answered and their contexts released (checked while
    // the server is live: its end would drain its children anyway); 4 is
    // still waiting on its backend (once its task has started).
    let live_requests = server.child_count();
    shutdown.cancel_with_cause(Cause::msg("server shutting down"));
    responses.push(last.await);

    for response in &responses {
        println!(
            "request {} -> {:<33} after {:>6.1} ms (cause: {})",
            response.id,
            format!("{:?}", response.result),
            response.took.as_secs_f64() * 1e3,
            response.cause.as_deref().unwrap_or("-"),
        );
    }

    // What it shows, checked (bounds leave room for a loaded machine).
    let [quick, crunch, backend, shut] = &responses[..] else {
        panic!("four responses")
    };
    assert_eq!(quick.result, Ok(1), "the handler read its request id");
    assert_eq!(crunch.result, Err(Error::DeadlineExceeded));
    assert!(crunch.took >= Duration::from_millis(30), "never early");
    assert!(
        crunch.took < Duration::from_secs(5),
        "CPU work stopped at its deadline"
    );
    assert_eq!(backend.result, Err(Error::DeadlineExceeded));
    assert!(backend.took >= Duration::from_millis(40) && backend.took < Duration::from_secs(5));
    assert_eq!(shut.result, Err(Error::Canceled));
    assert_eq!(shut.cause.as_deref(), Some("server shutting down"));
    assert!(
        live_requests <= 1,
        "answered requests' contexts were released: {live_requests} left"
    );
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "took {:?}",
        started.elapsed()
    );
    responses
}
