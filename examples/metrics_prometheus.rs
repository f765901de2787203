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
/// Their lateness: one sample each, recorded just after the deadline ends the
/// context (so possibly after the counter above).
const LATENESS: &str = "cancelctx_deadline_lateness_seconds_count 3";

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
    let complete = |text: &str| text.contains(DEADLINES) && text.contains(LATENESS);
    while !complete(&text) && Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(1));
        text = handle.render();
    }
    println!("{text}");
    // The values this run determines, line for line: the server, three
    // requests and the in-flight one were created, and all of them ended.
    for line in [
        "cancelctx_contexts_created_total 5",
        DEADLINES,
        "cancelctx_contexts_ended_total{kind=\"explicit\"} 1",
        "cancelctx_contexts_ended_total{kind=\"parent\"} 1",
        LATENESS,
        "cancelctx_contexts_not_ended 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}");
    }
    for metric in ["cancelctx_timer_armed", "cancelctx_callback_threads"] {
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
