//! A request handler on tokio, with a per-request timeout and cooperative
//! cancellation of CPU-bound work, on a runtime built *without* tokio's time
//! driver: every deadline is the crate's own.
//!
//! The handler and the simulated traffic are in `support/server.rs`, shared
//! word for word with the `smol_server` and `async_std_server` examples.
//!
//! Run with `cargo run --example tokio_server`; it also runs under
//! `cargo test --examples`. It checks what it prints.

#[path = "support/server.rs"]
mod server;

fn main() {
    // No `enable_time()` (nor `enable_all()`, which `#[tokio::main]` calls):
    // a `tokio::time::sleep` would panic here, a `Context` deadline does not.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("build the runtime");
    let responses = runtime.block_on(server::serve_demo_traffic(|handler| {
        let task = tokio::spawn(handler);
        Box::pin(async move { task.await.expect("the handler panicked") })
    }));
    assert_eq!(responses.len(), 4);
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokio_server() {
        super::main();
    }
}
