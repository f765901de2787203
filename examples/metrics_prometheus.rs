//! Exporting cancelctx's metrics in Prometheus text format.
//!
//! `cargo run --example metrics_prometheus --features metrics`
//!
//! Installs `metrics-exporter-prometheus` as the `metrics` recorder (no HTTP
//! listener: the text is printed), runs a few contexts to completion in the
//! three ways a context ends, and prints what a scrape would return.

use std::time::Duration;

use cancelctx::Context;
use metrics_exporter_prometheus::PrometheusBuilder;

fn main() {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .expect("install the Prometheus recorder");

    let (server, shutdown) = Context::background().named("server").with_cancel();
    for _ in 0..3 {
        let (request, _guard) = server
            .named("request")
            .with_timeout(Duration::from_millis(2));
        request.wait_done(); // each request times out
    }
    let (_in_flight, _g) = server.with_cancel();
    shutdown.cancel(); // ends the server and, through it, the in-flight request

    cancelctx::stats().record_gauges();
    let text = handle.render();
    println!("{text}");
    for metric in [
        "cancelctx_contexts_created_total",
        "cancelctx_contexts_ended_total{kind=\"deadline\"} 3",
        "cancelctx_contexts_ended_total{kind=\"explicit\"} 1",
        "cancelctx_contexts_ended_total{kind=\"parent\"} 1",
        "cancelctx_deadline_lateness_seconds",
        "cancelctx_timer_armed",
        "cancelctx_callback_threads",
        "cancelctx_contexts_not_ended",
    ] {
        assert!(text.contains(metric), "missing {metric}");
    }
}

#[cfg(test)]
mod tests {
    /// `cargo test --examples` runs the example (it asserts what it shows).
    #[test]
    fn metrics_prometheus() {
        super::main();
    }
}
