//! A deadline crossing processes: a caller → edge → middle → backend chain of
//! HTTP services on loopback, each behind `cancelctx::tower::ServerLayer`,
//! each calling the next through `ClientLayer`.
//!
//! The edge gives each request a 200 ms budget (its default timeout). Every
//! hop spends 20 ms of its own before calling the next, so the budget shrinks
//! hop by hop: the edge sends what it has left to the middle in
//! `connect-timeout-ms` (HTTP/1.1), the middle to the backend in
//! `grpc-timeout` (gRPC-style, HTTP/2). The backend starts CPU-bound work that
//! would take seconds, and stops it when the budget ends; the edge answers
//! the caller `504 Gateway Timeout` at the same moment.
//!
//! Run with `cargo run --example deadline_chain --features tower`; it also
//! runs under `cargo test --examples --all-features`. It checks what it prints.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use cancelctx::tower::{ClientLayer, ServerLayer};
use cancelctx::{Context, Error, grpc_timeout};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};

type Body = Full<Bytes>;

/// The edge's budget for a request that brings none.
const BUDGET: Duration = Duration::from_millis(200);
/// What each hop spends before calling the next.
const OWN_WORK: Duration = Duration::from_millis(20);
/// The backend's job: seconds of CPU, far more than the budget allows.
const JOB_ROUNDS: u64 = 5_000_000_000;

/// What one hop saw when its request arrived.
#[derive(Debug)]
struct Seen {
    hop: &'static str,
    budget: Duration,
    deadline: Instant,
    header: Option<String>,
}

/// How the backend's CPU-bound work ended.
#[derive(Debug)]
struct Stopped {
    rounds: u64,
    ran_for: Duration,
    at: Instant,
    error: Option<Error>,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// Records what the hop's request brought, and returns its context.
fn arrive(hop: &'static str, request: &Request<Incoming>, log: &Log) -> Context {
    let ctx = request
        .extensions()
        .get::<Context>()
        .expect("set by ServerLayer")
        .clone();
    let header = [grpc_timeout::HEADER, grpc_timeout::CONNECT_HEADER]
        .into_iter()
        .find_map(|name| {
            let value = request.headers().get(name)?;
            Some(format!("{name}: {}", value.to_str().unwrap_or("?")))
        });
    let budget = ctx.remaining().expect("every hop has a deadline");
    let deadline = ctx.deadline().expect("every hop has a deadline");
    log.lock().unwrap().push(Seen {
        hop,
        budget,
        deadline,
        header,
    });
    ctx
}

/// Serves `service` on 127.0.0.1 (HTTP/1.1 and HTTP/2).
async fn serve<S, B>(service: S) -> SocketAddr
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// One unit of "work": a round of xorshift, so the loop is real CPU work.
fn crunch(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^ (x << 17)
}

async fn run() -> (Vec<Seen>, Stopped, StatusCode, Duration) {
    let log = Log::default();
    let (stopped_tx, stopped_rx) = mpsc::channel();

    // backend: gRPC-style, reads `grpc-timeout`.
    let backend = {
        let log = log.clone();
        service_fn(move |request: Request<Incoming>| {
            let ctx = arrive("backend", &request, &log);
            let stopped = stopped_tx.clone();
            let started = Instant::now();
            std::thread::Builder::new()
                .name("backend-work".into())
                .spawn(move || {
                    let (mut x, mut rounds) = (0x2545_f491_4f6c_dd1d_u64, 0u64);
                    // The one correct loop: a slice of work, then a look at the context.
                    while !ctx.is_done() && rounds < JOB_ROUNDS {
                        for _ in 0..10_000 {
                            x = std::hint::black_box(crunch(x));
                        }
                        rounds += 10_000;
                    }
                    let _ = stopped.send(Stopped {
                        rounds,
                        ran_for: started.elapsed(),
                        at: Instant::now(),
                        error: ctx.err(),
                    });
                })
                .expect("spawn the backend's worker");
            // The answer would come when the work is done; the layer answers
            // first, when the budget ends.
            async { std::future::pending::<Result<Response<Body>, Infallible>>().await }
        })
    };
    let backend_addr = serve(ServerLayer::new().layer(backend)).await;

    // middle: plain HTTP in, gRPC-style out to the backend over HTTP/2.
    let middle = {
        let log = log.clone();
        let client = ClientLayer::new().layer(
            Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http::<Body>(),
        );
        service_fn(move |request: Request<Incoming>| {
            let ctx = arrive("middle", &request, &log);
            let client = client.clone();
            async move { Ok::<_, Infallible>(hop(ctx, client, backend_addr, true).await) }
        })
    };
    let middle_addr = serve(ServerLayer::new().layer(middle)).await;

    // edge: the caller sends no deadline; the edge's default is the budget.
    let edge = {
        let log = log.clone();
        let client =
            ClientLayer::new().layer(Client::builder(TokioExecutor::new()).build_http::<Body>());
        service_fn(move |request: Request<Incoming>| {
            let ctx = arrive("edge", &request, &log);
            let client = client.clone();
            async move { Ok::<_, Infallible>(hop(ctx, client, middle_addr, false).await) }
        })
    };
    let edge_addr = serve(ServerLayer::new().default_timeout(BUDGET).layer(edge)).await;

    // The caller.
    let caller = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let begin = Instant::now();
    let request = Request::get(format!("http://{edge_addr}/"))
        .body(Body::default())
        .unwrap();
    let response = caller.request(request).await.expect("the edge answers");
    let answered_after = begin.elapsed();

    let stopped =
        tokio::task::spawn_blocking(move || stopped_rx.recv_timeout(Duration::from_secs(5)))
            .await
            .unwrap()
            .expect("the backend's work stops within 5 s of the edge's answer");
    let seen = std::mem::take(&mut *log.lock().unwrap());
    (seen, stopped, response.status(), answered_after)
}

/// A hop's own work, then the call to the next hop with the request's
/// context: `ClientLayer` sends what is left of the budget.
async fn hop<S>(ctx: Context, client: S, next: SocketAddr, grpc: bool) -> Response<Body>
where
    S: Service<Request<Body>, Response = Response<Incoming>, Error = BoxError>,
{
    if ctx.sleep(OWN_WORK).await.is_err() {
        return status(StatusCode::GATEWAY_TIMEOUT);
    }
    let mut request = Request::post(format!("http://{next}/work"));
    if grpc {
        request = request
            .header("content-type", "application/grpc")
            .header("te", "trailers");
    }
    let mut request = request.body(Body::default()).unwrap();
    request.extensions_mut().insert(ctx);
    match client.oneshot(request).await {
        Ok(response) => status(response.status()),
        Err(_) => status(StatusCode::GATEWAY_TIMEOUT),
    }
}

fn status(code: StatusCode) -> Response<Body> {
    let mut response = Response::new(Body::default());
    *response.status_mut() = code;
    response
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1e3)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let started = Instant::now();
    let (seen, stopped, status, answered_after) = run().await;

    for Seen {
        hop,
        budget,
        header,
        ..
    } in &seen
    {
        let from = header.as_deref().unwrap_or("no header: the edge's default");
        println!("{hop:<8} saw a budget of {:>9}   ({from})", ms(*budget));
    }
    // The budget ends at the edge's deadline. Each hop's deadline is its
    // arrival plus what the caller had left when sending, so it is a little
    // later (by the trip, and the header's rounding up). Whichever comes first
    // ends the backend's context: its own deadline, or the middle hanging up
    // when the budget ended upstream.
    let budget_end = seen[0].deadline;
    let why = match stopped.error {
        Some(Error::DeadlineExceeded) => "its own deadline passed",
        Some(Error::Canceled) => "the middle hung up as the budget ended upstream",
        None => "still live?",
    };
    let (off, sign) = match stopped.at.checked_duration_since(budget_end) {
        Some(late) => (late, "after"),
        None => (budget_end - stopped.at, "BEFORE"),
    };
    println!(
        "backend  stopped its CPU-bound work after {} and {} rounds, {} {sign} the budget's end: {why}",
        ms(stopped.ran_for),
        stopped.rounds,
        ms(off),
    );
    println!("caller   got {status} after {}", ms(answered_after));

    // What it shows, checked.
    let hops: Vec<_> = seen.iter().map(|seen| seen.hop).collect();
    assert_eq!(hops, ["edge", "middle", "backend"]);
    assert!(seen[0].budget <= BUDGET && seen[0].header.is_none());
    assert!(
        seen[1]
            .header
            .as_deref()
            .unwrap()
            .starts_with("connect-timeout-ms: ")
    );
    assert!(
        seen[2]
            .header
            .as_deref()
            .unwrap()
            .starts_with("grpc-timeout: ")
    );
    for pair in seen.windows(2) {
        // Each hop gets less than the one before: its own work and the trip
        // are spent (the header rounds up by under 1 ms).
        assert!(
            pair[1].budget + OWN_WORK <= pair[0].budget + Duration::from_millis(1),
            "{pair:?}"
        );
    }
    assert!(stopped.error.is_some() && stopped.rounds < JOB_ROUNDS);
    // The work stopped when the budget ended: never before, and soon after
    // (typically within a few ms; the bounds leave room for a loaded machine).
    for pair in seen.windows(2) {
        assert!(
            pair[1].deadline >= pair[0].deadline,
            "a hop's deadline is never earlier"
        );
    }
    assert!(stopped.at >= budget_end, "{stopped:?}");
    assert!(
        stopped.at < budget_end + Duration::from_secs(5),
        "{stopped:?}"
    );
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(answered_after >= BUDGET && answered_after < BUDGET + Duration::from_secs(5));
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "took {:?}",
        started.elapsed()
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn deadline_chain() {
        super::main();
    }
}
