//! loom models of the crate's concurrency.
//!
//! Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test -p cancelctx-timer --release --lib loom
//! ```
//!
//! The driver models run the real [`driver::run`] loop over a [`Park`] with a
//! fixed clock and *untimed* waits, so "parked until the deadline" becomes
//! "parked until notified": a lost wake-up is a deadlock, which loom reports.
//! They use two shards and put racing entries on different ones, so the
//! lock-free wake-up check of `Shared::insert_on` (the `wake_at` mirror) is
//! what is being tested.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use loom::thread;

use crate::Timer;
use crate::callback::Callback;
use crate::driver::{self, Park};
use crate::shared::{Mode, ParkState, Shared};
use crate::sync::{Arc, MutexGuard};

/// Shards in the models: enough to put racing entries on different locks.
const SHARDS: usize = 2;

/// A clock frozen at `now`; parking ignores the deadline and waits for a
/// notify (exactly what loom's condvar does anyway).
struct FrozenPark {
    now: Instant,
}

impl Park for FrozenPark {
    fn now(&self) -> Instant {
        self.now
    }

    fn park<'a>(
        &self,
        shared: &'a Shared,
        guard: MutexGuard<'a, ParkState>,
        _until: Option<Instant>,
    ) -> MutexGuard<'a, ParkState> {
        shared.cv.wait(guard)
    }
}

/// The classic bug: deciding to park under the lock, then releasing it
/// before waiting. Used to show that the model catches lost wake-ups.
struct RacyPark {
    now: Instant,
}

impl Park for RacyPark {
    fn now(&self) -> Instant {
        self.now
    }

    fn park<'a>(
        &self,
        shared: &'a Shared,
        guard: MutexGuard<'a, ParkState>,
        _until: Option<Instant>,
    ) -> MutexGuard<'a, ParkState> {
        drop(guard);
        // A notify sent in this window is lost.
        let guard = shared.park.lock();
        shared.cv.wait(guard)
    }
}

/// A callback counting into `fired` that shuts the driver down once `fired`
/// reaches `last`: the driver thread only finishes if all those entries fire.
fn counting_callback(shared: &Arc<Shared>, fired: &Arc<AtomicUsize>, last: usize) -> Callback {
    let shared = Arc::clone(shared);
    let fired = Arc::clone(fired);
    Callback::Func(Box::new(move || {
        if fired.fetch_add(1, SeqCst) + 1 == last {
            shared.shutdown();
        }
    }))
}

/// One driver racing one insert of an earlier deadline on shard 1, while the
/// driver scans, or parks on a far deadline on shard 0 (`prefill_far`) or on
/// nothing. The inserted callback shuts the driver down, so the driver thread
/// only finishes if the entry fires; a lost wake-up leaves it parked forever.
fn earlier_deadline_model<P, F>(prefill_far: bool, make_park: F)
where
    P: Park + Send + 'static,
    F: Fn(Instant) -> P + Sync + Send + 'static,
{
    let base = Instant::now();
    loom::model(move || {
        let now = base + Duration::from_secs(50);
        let shared = Arc::new(Shared::with_shards(Mode::Running, SHARDS, base));
        if prefill_far {
            // The driver will compute this as its wake-up time and park.
            let far = base + Duration::from_secs(100);
            shared.insert_on(0, far, Callback::Func(Box::new(|| panic!("far fired"))));
        }
        let park = make_park(now);
        let driver = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || driver::run(&shared, &park))
        };

        let fired = Arc::new(AtomicUsize::new(0));
        let early = base + Duration::from_secs(10);
        let callback = counting_callback(&shared, &fired, 1);
        let (key, spawn) = shared.insert_on(1, early, callback);
        assert!(!spawn);
        assert_eq!(key.queue_id(), 1);

        driver.join().unwrap();
        assert_eq!(fired.load(SeqCst), 1, "driver exited without firing");
        assert_eq!(shared.mode(), Mode::Stopped);
        let stats = shared.stats();
        assert_eq!(stats.armed, 0, "leftovers drained at shutdown");
        assert_eq!(stats.fired, 1);
    });
}

/// (1a) Earlier deadline on another shard while the driver scans or parks on
/// a far one: must fire.
#[test]
fn loom_earlier_deadline_on_another_shard_wakes_driver() {
    earlier_deadline_model(true, |now| FrozenPark { now });
}

/// (1b) First deadline while the driver scans or parks on empty shards: must
/// fire.
#[test]
fn loom_first_deadline_wakes_idle_driver() {
    earlier_deadline_model(false, |now| FrozenPark { now });
}

/// Runs the ignored test `name` (a deliberately broken model) in a child
/// process and checks that loom reported a deadlock there. (loom aborts the
/// process while unwinding out of a deadlocked model, hence the child.)
fn assert_model_deadlocks(name: &str) {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "--nocapture", "--test-threads=1"])
        .arg(format!("loom_tests::{name}"))
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "the broken driver passed the model"
    );
    assert!(stderr.contains("deadlock"), "unexpected failure:\n{stderr}");
}

/// (1c) Sanity check of the model itself: a driver that releases the lock
/// between deciding to park and waiting loses the notify, and loom finds
/// that interleaving (reported as a deadlock).
#[test]
fn loom_model_detects_lost_wakeup_in_racy_park() {
    assert_model_deadlocks("racy_park_model_deadlocks");
}

/// The buggy model run by the test above; fails (deadlocks) by design.
#[test]
#[ignore = "fails by design; run by loom_model_detects_lost_wakeup_in_racy_park"]
fn racy_park_model_deadlocks() {
    earlier_deadline_model(true, |now| RacyPark { now });
}

/// (1c') Same for the sharded protocol: a driver that does not publish
/// "scanning" at the start of its turn lets an insert on a shard it has
/// already scanned go unnoticed (the insert sees a stale `wake_at`).
#[test]
fn loom_model_detects_missing_scan_mark() {
    assert_model_deadlocks("missing_scan_mark_model_deadlocks");
}

/// The buggy model run by the test above; fails (deadlocks) by design.
#[test]
#[ignore = "fails by design; run by loom_model_detects_missing_scan_mark"]
fn missing_scan_mark_model_deadlocks() {
    crate::shared::FAULT_NO_SCAN_MARK.store(true, std::sync::atomic::Ordering::Relaxed);
    earlier_deadline_model(true, |now| FrozenPark { now });
}

/// (1d) Two threads insert due entries on two different shards at once while
/// the driver scans or parks on a far one: both fire (either insert may or
/// may not find a wake-up already pending).
#[test]
fn loom_inserts_on_two_shards_both_fire() {
    let base = Instant::now();
    let mut builder = loom::model::Builder::new();
    // Three threads: bound the preemptions to keep the run short (4: about
    // 2 s; unbounded also passes, in about 5 min).
    builder.preemption_bound = Some(4);
    builder.check(move || {
        let now = base + Duration::from_secs(50);
        let shared = Arc::new(Shared::with_shards(Mode::Running, SHARDS, base));
        let far = base + Duration::from_secs(100);
        shared.insert_on(0, far, Callback::Func(Box::new(|| panic!("far fired"))));
        let driver = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || driver::run(&shared, &FrozenPark { now }))
        };
        let fired = Arc::new(AtomicUsize::new(0));
        let other = {
            let callback = counting_callback(&shared, &fired, 2);
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                shared.insert_on(0, base + Duration::from_secs(10), callback);
            })
        };
        let callback = counting_callback(&shared, &fired, 2);
        shared.insert_on(1, base + Duration::from_secs(20), callback);
        other.join().unwrap();
        driver.join().unwrap();
        assert_eq!(fired.load(SeqCst), 2);
        assert_eq!(shared.stats().fired, 2);
    });
}

/// (2) Fire vs cancel of the same entry, with the firer merging two shards:
/// exactly one of {cancel returned true, callback ran}, and the stats agree.
#[test]
fn loom_fire_vs_cancel_exactly_once() {
    loom::model(|| {
        let now = Instant::now();
        let shared = Arc::new(Shared::with_shards(Mode::Manual, SHARDS, now));
        let ran = Arc::new(AtomicBool::new(false));
        let callback = {
            let ran = Arc::clone(&ran);
            Callback::Func(Box::new(move || ran.store(true, SeqCst)))
        };
        let (key, _) = shared.insert_on(1, now, callback);
        let firer = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || shared.fire_due(now))
        };
        let canceled = shared.cancel(key).is_some();
        let fired = firer.join().unwrap();
        let ran = ran.load(SeqCst);
        assert!(canceled != ran, "canceled={canceled} ran={ran}");
        assert_eq!(fired, usize::from(ran));
        let stats = shared.stats();
        assert_eq!(stats.fired + stats.canceled, 1);
        assert_eq!(stats.armed, 0);
    });
}

/// (3) A sleep re-registering a new waker while the entry fires: the task is
/// either told `Ready` or woken through the waker it registered last.
#[test]
fn loom_sleep_waker_swap_vs_fire() {
    loom::model(|| {
        let timer = Timer::manual();
        let now = Instant::now();
        let mut sleep = timer.sleep_until(now);
        // Arm it with a throwaway waker first.
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(Pin::new(&mut sleep).poll(&mut cx), Poll::Pending);
        let firer = {
            let timer = timer.clone();
            thread::spawn(move || timer.fire_due(now))
        };
        // block_on polls with its own (different) waker: the swap races the
        // fire, and a lost wake-up would deadlock.
        loom::future::block_on(&mut sleep);
        assert!(sleep.is_elapsed());
        assert_eq!(firer.join().unwrap(), 1);
    });
}
