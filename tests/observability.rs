//! The observability features together (`metrics` and `registry`): listing
//! deep chains and chains through `without_cancel`, and the lateness sample of
//! a deadline whose end runs a panicking waker.
#![cfg(all(feature = "metrics", feature = "registry"))]

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, mpsc};
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use cancelctx::Context;
use cancelctx::registry::LeakCheck;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// The registry is process-wide: these tests run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Regression. `LiveContext::parent` is documented as "the nearest cancelable ancestor's
/// `id`". A cancelable context derived below `without_cancel` has one (the
/// `without_cancel` link holds it, so it is alive and registered), but the
/// listing reports no parent: the child shows as a separate root and the
/// ancestor it keeps alive shows with nothing under it.
#[test]
fn regression_registry_lists_a_context_below_without_cancel_under_its_ancestor() {
    let _serial = serial();
    let check = LeakCheck::start();
    let (request, request_guard) = Context::background().named("request").with_cancel();
    let (audit, _audit_guard) = request
        .without_cancel()
        .named("audit-write")
        .with_timeout(Duration::from_secs(60));
    drop(request_guard);
    drop(request);
    let snapshot = check.check().expect_err("both are alive");
    let find = |name: &str| {
        snapshot
            .contexts
            .iter()
            .find(|c| c.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("{name} not listed:\n{snapshot}"))
    };
    let (request_id, audit_parent) = (find("request").id, find("audit-write").parent);
    assert_eq!(
        audit_parent,
        Some(request_id),
        "the nearest cancelable ancestor of `audit-write` is `request`:\n{snapshot}"
    );
    drop(audit);
    check.assert_clean();
}

/// Regression: a leaked deep chain is what `LeakCheck` exists to report, and the crate
/// promises million-deep chains work. Listing one looks up each context's
/// name by walking its chain to the root: quadratic, so a 300 000-deep
/// chain takes minutes (measured: 40 000 deep ~1.5 s, 80 000 ~6 s). The
/// bound is generous: a linear listing of 300 000 contexts takes well under
/// a second.
#[test]
fn regression_registry_snapshot_of_a_deep_chain_is_not_quadratic() {
    let _serial = serial();
    const DEPTH: usize = 300_000;
    let check = LeakCheck::start();
    let mut ctx = Context::background().named("deep");
    let mut guards = Vec::with_capacity(DEPTH);
    for _ in 0..DEPTH {
        let (child, guard) = ctx.with_cancel();
        ctx = child;
        guards.push(guard);
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let start = Instant::now();
        let leaked = check.check().expect_err("the chain is live");
        let _ = tx.send((leaked.contexts.len(), start.elapsed()));
    });
    let (listed, took) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("LeakCheck::check of a 300 000-deep chain took over 60 s");
    assert_eq!(listed, DEPTH);
    eprintln!("listed {listed} contexts in {took:?}");
    drop(ctx);
    drop(guards);
}

/// The process-wide `metrics` recorder of this test binary.
fn snapshotter() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().expect("the only recorder");
        snapshotter
    })
}

/// What the recorder got since the last call (snapshots drain counters and
/// histograms): `kind="deadline"` ends, and lateness samples.
fn deadline_metrics() -> (u64, Vec<f64>) {
    let mut ended = 0;
    let mut lateness = Vec::new();
    for (key, _, _, value) in snapshotter().snapshot().into_vec() {
        let key = key.key();
        match (key.name(), value) {
            ("cancelctx_contexts_ended_total", DebugValue::Counter(n))
                if key
                    .labels()
                    .any(|l| l.key() == "kind" && l.value() == "deadline") =>
            {
                ended += n
            }
            ("cancelctx_deadline_lateness_seconds", DebugValue::Histogram(v)) => {
                lateness.extend(v.into_iter().map(|s| s.into_inner()))
            }
            _ => {}
        }
    }
    (ended, lateness)
}

struct PanickingWaker;

impl Wake for PanickingWaker {
    fn wake(self: Arc<Self>) {
        panic!("a waker that panics (on purpose)");
    }
}

/// Regression: every context ended by its own deadline is one `kind="deadline"` end and
/// one lateness sample ("Lateness counts once, for whoever fired the
/// deadline"). The crate contains a panicking waker (every other waiter is
/// still woken, the hooks still run, the panic is resumed at the end), but
/// `Alarm::fire` records the lateness only after `cancel` returns, so the
/// resumed panic skips it: the end is counted, its lateness is lost.
#[test]
fn regression_metrics_lateness_is_recorded_when_a_waker_panics() {
    let _serial = serial();
    let _ = deadline_metrics(); // install, and drain older values
    let stats_before = cancelctx::stats().contexts.deadline_exceeded;

    let (ctx, _guard) = Context::background().with_timeout(Duration::from_millis(5));
    let mut done = ctx.done();
    let waker = Waker::from(Arc::new(PanickingWaker));
    let poll = Pin::new(&mut done).poll(&mut std::task::Context::from_waker(&waker));
    assert!(poll.is_pending());
    drop(waker);
    // Wait for the timer thread to fire it, without checking the context
    // (a check could fire it on this thread): `stats()` never fires.
    let give_up = Instant::now() + Duration::from_secs(10);
    while cancelctx::stats().contexts.deadline_exceeded == stats_before {
        assert!(Instant::now() < give_up, "the deadline never fired");
        std::thread::sleep(Duration::from_millis(1));
    }
    // The hooks run just after: collect for a generous while.
    let mut ended = 0;
    let mut samples = Vec::new();
    let give_up = Instant::now() + Duration::from_secs(2);
    while Instant::now() < give_up {
        let (more, lateness) = deadline_metrics();
        ended += more;
        samples.extend(lateness);
        if ended > 0 && !samples.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(ended, 1, "one deadline end counted");
    assert_eq!(
        samples.len(),
        1,
        "one lateness sample for that end, got {samples:?}"
    );
    drop(done);
}
