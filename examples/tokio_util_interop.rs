//! A `Context` and a tokio-util `CancellationToken` driving each other
//! (feature `tokio-util`), on a tokio runtime built without its time driver.
//!
//! 1. Context → token: a library that only knows `CancellationToken` gets a
//!    token that ends with a request's context (here: its deadline).
//! 2. Token → context: a server's shutdown token, tokio style, ends every
//!    request's context, which says why (`TokenCanceled`).
//!
//! Run with `cargo run --example tokio_util_interop --features tokio-util`;
//! it also runs under `cargo test --examples --all-features`. It checks what
//! it prints.

use std::time::{Duration, Instant};

use cancelctx::tokio_util::TokenCanceled;
use cancelctx::{Context, Error};
use tokio_util::sync::CancellationToken;

/// A tokio-util style library loop: works until its token is canceled.
async fn library_poller(token: CancellationToken) -> u32 {
    let mut polls = 0;
    loop {
        tokio::select! {
            () = token.cancelled() => return polls,
            () = tokio::task::yield_now() => polls += 1,
        }
    }
}

async fn context_drives_token() {
    let start = Instant::now();
    let (request, _guard) = Context::background().with_timeout(Duration::from_millis(30));
    let linked = request.cancellation_token();
    let polls = tokio::spawn(library_poller(linked.token().clone()))
        .await
        .unwrap();
    let took = start.elapsed();
    println!(
        "context -> token: the library stopped after {polls} polls, {:.1} ms in",
        took.as_secs_f64() * 1e3
    );
    assert_eq!(request.err(), Some(Error::DeadlineExceeded));
    assert!(took >= Duration::from_millis(30) && took < Duration::from_secs(5));
    assert!(linked.token().is_cancelled());

    // A library call that returns first: dropping the guard cancels its token
    // and removes its registration at once, while the request goes on.
    let (request, _guard) = Context::background().with_timeout(Duration::from_secs(60));
    let linked = request.cancellation_token();
    let token = linked.token().clone();
    let registered = request.child_count();
    drop(linked);
    println!(
        "context -> token: guard dropped first: token canceled {}, registrations {registered} -> {}",
        token.is_cancelled(),
        request.child_count()
    );
    assert_eq!(registered, 1);
    assert!(token.is_cancelled() && !request.is_done());
    assert_eq!(request.child_count(), 0);
}

async fn token_drives_context() {
    let shutdown = CancellationToken::new();
    let (server, _server_guard) = Context::background().with_cancellation_token(&shutdown);
    let mut requests = Vec::new();
    let handlers: Vec<_> = (0..3)
        .map(|i| {
            let (ctx, guard) = server.with_timeout(Duration::from_secs(60));
            requests.push(ctx.clone());
            tokio::spawn(async move {
                let _guard = guard;
                // Any cancelctx-aware work: here, a long sleep on the crate's timer.
                let slept = ctx.sleep(Duration::from_secs(3600)).await;
                (i, slept, ctx.cause().map(|c| c.is::<TokenCanceled>()))
            })
        })
        .collect();
    tokio::task::yield_now().await;
    shutdown.cancel(); // synchronous: every request context is done on return
    assert!(server.is_done() && requests.iter().all(Context::is_done));
    for handler in handlers {
        let (i, slept, by_token) = handler.await.unwrap();
        println!(
            "token -> context: handler {i} ended with {slept:?}, cause is TokenCanceled: {by_token:?}"
        );
        assert_eq!(slept, Err(Error::Canceled));
        assert_eq!(by_token, Some(true));
    }
}

fn main() {
    let started = Instant::now();
    // No `enable_time()`: the deadlines here are the crate's own.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("build the runtime");
    runtime.block_on(async {
        context_drives_token().await;
        token_drives_context().await;
    });
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "took {:?}",
        started.elapsed()
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokio_util_interop() {
        super::main();
    }
}
