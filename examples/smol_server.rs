//! The `tokio_server` example's handler, unchanged, on smol: a per-request
//! timeout and cooperative cancellation of CPU-bound work.
//!
//! Run with `cargo run --example smol_server`; it also runs under
//! `cargo test --examples`. It checks what it prints.

#[path = "support/server.rs"]
mod server;

fn main() {
    let responses = smol::block_on(server::serve_demo_traffic(|handler| {
        Box::pin(smol::spawn(handler))
    }));
    assert_eq!(responses.len(), 4);
}

#[cfg(test)]
mod tests {
    #[test]
    fn smol_server() {
        super::main();
    }
}
