//! The `metrics` facade (feature `metrics`). One test: it installs the
//! process-wide recorder.

use std::time::Duration;

use cancelctx::Context;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

#[test]
fn counters_and_lateness_histogram_are_recorded() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("no other recorder in this test binary");

    let (parent, guard) = Context::background().with_cancel();
    let (_child, _g) = parent.with_cancel();
    drop(guard);
    let (t, _gt) = Context::background().with_timeout(Duration::from_millis(1));
    t.wait_done();

    // Snapshots drain histograms, and the lateness sample is recorded by
    // whoever fired the deadline (the timer thread or the waiter itself),
    // possibly just after the waiter woke: accumulate over a few snapshots.
    let mut created = 0;
    let mut ended = std::collections::HashMap::new();
    let mut lateness_samples = 0;
    let start = std::time::Instant::now();
    loop {
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            match (key.name(), value) {
                ("cancelctx_contexts_created_total", DebugValue::Counter(n)) => {
                    created = created.max(n)
                }
                ("cancelctx_contexts_ended_total", DebugValue::Counter(n)) => {
                    let kind = key
                        .labels()
                        .find(|l| l.key() == "kind")
                        .unwrap()
                        .value()
                        .to_owned();
                    let seen = ended.entry(kind).or_insert(0);
                    *seen = n.max(*seen);
                }
                ("cancelctx_deadline_lateness_seconds", DebugValue::Histogram(v)) => {
                    lateness_samples += v.len();
                    assert!(v.iter().all(|s| s.into_inner() >= 0.0));
                }
                _ => {}
            }
        }
        if lateness_samples > 0 && ended.len() == 3 || start.elapsed() > Duration::from_secs(10) {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(created, 3);
    assert_eq!(ended.get("explicit"), Some(&1));
    assert_eq!(ended.get("parent"), Some(&1));
    assert_eq!(ended.get("deadline"), Some(&1));
    assert_eq!(lateness_samples, 1);
}
