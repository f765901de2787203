//! Exporting cancelctx's metrics in Prometheus text format.
//!
//! `cargo run --example metrics_prometheus --features metrics`
//!
//! Installs `metrics-exporter-prometheus` as the `metrics` recorder (no HTTP
//! listener: the text is printed), runs a few contexts to completion in the
//! three ways a context ends, and prints what a scrape would return.

use std::time::{Duration, Instant};

use cancelctx::Context;
use metrics_exporter_prometheus::PrometheusBuilder;

/// The three requests' deadlines, as the scrape shows them.
const DEADLINES: &str = "cancelctx_contexts_ended_total{kind=\"deadline\"} 3";

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
    // The metrics hooks run just after a context can be seen done (outside
    // its lock; for a deadline, on the timer thread): a scrape right now may
    // still miss the last one. Scrape until it is there (bounded), as the
    // next scrape of a real exporter would.
    let give_up = Instant::now() + Duration::from_secs(10);
    let mut text = handle.render();
    while !text.contains(DEADLINES) && Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(1));
        text = handle.render();
    }
    println!("{text}");
    for metric in [
        "cancelctx_contexts_created_total",
        DEADLINES,
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
