//! The `tokio_server` example's handler, unchanged, on async-std: a
//! per-request timeout and cooperative cancellation of CPU-bound work.
//!
//! Run with `cargo run --example async_std_server`; it also runs under
//! `cargo test --examples`. It checks what it prints.

#[path = "support/server.rs"]
mod server;

fn main() {
    let responses = async_std::task::block_on(server::serve_demo_traffic(|handler| {
        Box::pin(async_std::task::spawn(handler))
    }));
    assert_eq!(responses.len(), 4);
}

#[cfg(test)]
mod tests {
    #[test]
    fn async_std_server() {
        super::main();
    }
}
