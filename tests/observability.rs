//! The observability features together (`metrics` and `registry`): listing
//! deep chains and chains through `without_cancel`, and the lateness sample of
//! a deadline whose end runs a panicking waker.
#![cfg(all(feature = "metrics", feature = "registry"))]

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Barrier, OnceLock, mpsc};
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};
use std::{fmt, thread};

use cancelctx::registry::LeakCheck;
use cancelctx::{Cause, Context, Error};
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

/// A deadline cause whose `Drop` panics (user data).
struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        if !thread::panicking() {
            panic!("deadline cause dropped (on purpose)");
        }
    }
}

impl fmt::Debug for Bomb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Bomb")
    }
}

impl fmt::Display for Bomb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the deadline passed")
    }
}

impl std::error::Error for Bomb {}

fn spin_until(at: Instant) {
    while Instant::now() < at {
        std::hint::spin_loop();
    }
}

/// Regression: `Alarm::fire` recorded a lateness sample when `cancel` panicked, on the
/// claim that "only a winning call runs any" user code. A losing fire
/// does run some: it drops its clone of the deadline cause, and when a
/// concurrent explicit cancel won (and dropped the node's reference to
/// that cause), the loser's drop is the last one. A panic there made
/// `fire` record a lateness sample for a context that ended `Canceled`:
/// more lateness samples than deadline ends.
#[test]
fn regression_lateness_is_not_recorded_by_a_fire_that_lost_to_a_cancel() {
    let _serial = serial();
    let _ = deadline_metrics(); // install, drain
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut deadline_ends = 0;
    let mut canceled = 0;
    let timer = cancelctx::timer::Timer::global();
    for i in 0..10_000u32 {
        let deadline = Instant::now() + Duration::from_micros(200);
        let scheduled = timer.stats().scheduled;
        let (ctx, guard) = Context::background().with_deadline_cause(deadline, Cause::new(Bomb));
        if timer.stats().scheduled == scheduled {
            // Built done (a loaded machine made it after its deadline): no
            // deadline was fired, so there is no lateness to record.
            let _ = catch_unwind(AssertUnwindSafe(move || drop((ctx, guard))));
            continue;
        }
        // A child, so a losing fire may wait for the winner's walk.
        let (child, _child_guard) = ctx.with_cancel();
        let start = Arc::new(Barrier::new(2));
        let observer = {
            let (ctx, start) = (ctx.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                spin_until(deadline);
                // Fires the passed deadline on this thread.
                let _ = catch_unwind(AssertUnwindSafe(|| ctx.remaining()));
            })
        };
        start.wait();
        spin_until(deadline);
        for _ in 0..(i % 48) {
            std::hint::spin_loop();
        }
        let _ = catch_unwind(AssertUnwindSafe(|| guard.cancel()));
        observer.join().unwrap();
        match ctx.err() {
            Some(Error::DeadlineExceeded) => deadline_ends += 1,
            Some(Error::Canceled) => canceled += 1,
            None => unreachable!(),
        }
        let _ = catch_unwind(AssertUnwindSafe(move || drop((ctx, child))));
    }
    std::panic::set_hook(quiet);
    // The timer thread records a deadline it fired right after ending it:
    // the last rounds' samples may still be on their way (too many shows at
    // once; too few only after a while).
    let mut samples = deadline_metrics().1.len();
    let waited = Instant::now();
    while samples < deadline_ends && waited.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(10));
        samples += deadline_metrics().1.len();
    }
    eprintln!("deadline ends {deadline_ends}, canceled {canceled}, lateness samples {samples}");
    assert_eq!(
        samples, deadline_ends,
        "one lateness sample per deadline end ({canceled} contexts ended Canceled)"
    );
}
