//! Stress: eight threads deriving, waiting, canceling and dropping contexts
//! from a shared root; a cancel fan-out to 100 000 children; a million
//! timeouts through the timer heap.
//!
//! The tests run one at a time (`serial()`): two of them check that the
//! global timer's `armed` count returns to its start value, which timers
//! armed by a concurrent test would disturb. Operation counts are the
//! release ones; debug builds run a tenth of the operations of the
//! eight-thread test (and all of the others).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::thread;
use std::time::{Duration, Instant};

use cancelctx::timer::Timer;
use cancelctx::{AfterFunc, CancelGuard, Cause, Context, Error};
use common::{CountingWaker, PATIENCE, eventually, poll_once};
use futures::future::{Either, select};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    // A failed test poisons the lock; the next one may still run.
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `release` in release builds, `debug` in debug builds.
const fn scaled(release: usize, debug: usize) -> usize {
    if cfg!(debug_assertions) {
        debug
    } else {
        release
    }
}

fn armed() -> usize {
    Timer::global().stats().armed
}

/// xorshift64*: a small deterministic generator (no dependency).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// 0 to 2 ms, in microseconds.
    fn short_timeout(&mut self) -> Duration {
        Duration::from_micros(self.below(2_001))
    }
}

// ---------------------------------------------------------------------------
// Eight threads on a shared root
// ---------------------------------------------------------------------------

/// A context shared between the threads, with its guard until someone
/// takes it (to cancel or detach it).
///
/// The guard is declared first so it is dropped (canceling the context)
/// before the context handle: the context never outlives its guard unseen
/// (see `regression_eight_threads_with_detached_guards_leave_no_stale_entries`).
struct Slot {
    guard: Option<CancelGuard>,
    ctx: Context,
}

#[derive(Default)]
struct Tally {
    derived: AtomicUsize,
    waits: AtomicUsize,
    async_waits: AtomicUsize,
    /// Waits that started on a live context (woken, not ready at once).
    blocked: AtomicUsize,
    cancels: AtomicUsize,
    registered: AtomicUsize,
    stopped: AtomicUsize,
    ran: Arc<AtomicUsize>,
}

struct Shared {
    root: Context,
    slots: Vec<Mutex<Option<Slot>>>,
    tally: Tally,
}

impl Shared {
    /// The context in slot `i`; `None` if it is empty or out of range
    /// (callers then use the root).
    fn clone_ctx(&self, i: usize) -> Option<Context> {
        self.slots
            .get(i)?
            .lock()
            .unwrap()
            .as_ref()
            .map(|s| s.ctx.clone())
    }

    /// Stores `slot`, dropping (so canceling) the one it replaces outside
    /// the lock.
    fn put(&self, i: usize, slot: Slot) {
        let old = self.slots[i].lock().unwrap().replace(slot);
        drop(old);
    }

    fn take(&self, i: usize) -> Option<Slot> {
        self.slots[i].lock().unwrap().take()
    }

    fn take_guard(&self, i: usize) -> Option<(Context, CancelGuard)> {
        let mut slot = self.slots[i].lock().unwrap();
        let slot = slot.as_mut()?;
        Some((slot.ctx.clone(), slot.guard.take()?))
    }
}

/// Every context this test creates has a deadline at most 2 ms after its
/// creation, so every wait must end soon; one that takes the whole of
/// `PATIENCE` is a lost wake-up.
fn check_wait(ctx: &Context, result: Option<Error>, waited: Duration) {
    let err = result.expect("every context here has a deadline of at most 2 ms");
    assert!(waited < PATIENCE, "lost wake-up: a wait took {waited:?}");
    assert_eq!(ctx.err(), Some(err), "err() changed after the wait");
    let cause = ctx.cause().expect("a done context has a cause");
    match cause.downcast_ref::<Error>() {
        Some(e) => assert_eq!(*e, err),
        None => {
            assert_eq!(err, Error::Canceled);
            assert_eq!(cause.to_string(), "stress");
        }
    }
}

fn derive(shared: &Shared, rng: &mut Rng) {
    let from = rng.below(shared.slots.len() as u64 + 1) as usize;
    let parent = shared
        .clone_ctx(from)
        .unwrap_or_else(|| shared.root.clone());
    let parent_done = parent.err();
    let kind = rng.below(4);
    let (ctx, guard) = match kind {
        0 => parent.with_timeout(rng.short_timeout()),
        // Below a context with a deadline: inherits it.
        1 if parent.deadline().is_some() => parent.with_cancel(),
        2 => parent
            .with_value(rng.next())
            .with_timeout(rng.short_timeout()),
        3 => parent.without_cancel().with_timeout(rng.short_timeout()),
        _ => parent.with_timeout(rng.short_timeout()),
    };
    let deadline = ctx.deadline().expect("every context here has a deadline");
    if kind != 3 {
        if let Some(err) = parent_done {
            let got = ctx
                .err()
                .expect("a child of a done parent is done at construction");
            // The parent's error, unless the child's own (earlier) deadline won.
            assert!(got == err || got == Error::DeadlineExceeded);
        }
        if let Some(parent_deadline) = parent.deadline() {
            assert!(
                deadline <= parent_deadline,
                "a child's deadline is capped by its parent's"
            );
        }
    }
    shared.tally.derived.fetch_add(1, Ordering::Relaxed);
    let to = rng.below(shared.slots.len() as u64) as usize;
    shared.put(
        to,
        Slot {
            guard: Some(guard),
            ctx,
        },
    );
}

/// Derives a chain below a slot, cancels its head, and checks that the
/// cancel reached every descendant before returning and woke the tail's
/// waker exactly once; then shares the tail.
fn subtree(shared: &Shared, rng: &mut Rng) {
    let from = rng.below(shared.slots.len() as u64 + 1) as usize;
    let parent = shared
        .clone_ctx(from)
        .unwrap_or_else(|| shared.root.clone());
    let (head, head_guard) = parent.with_timeout(rng.short_timeout());
    let (mid, _mid_guard) = head.with_cancel();
    let (tail, tail_guard) = mid.with_value(7u8).with_timeout(rng.short_timeout());
    let (counter, waker) = CountingWaker::new();
    let mut done = tail.done();
    let registered = poll_once(&mut done, &waker).is_pending();
    if rng.below(2) == 0 {
        head_guard.cancel_with_cause(Cause::msg("stress"));
    } else {
        drop(head_guard);
    }
    assert!(
        head.is_done() && mid.is_done() && tail.is_done(),
        "cancel is synchronous"
    );
    if registered {
        // Woken by this cancel before it returned, or by the timer thread
        // (the tail's own deadline), which may still be notifying. (Checked
        // before polling again: a poll that finds the context done returns
        // `Ready` and unregisters the waker, which then rightly stays
        // un-woken.)
        let start = Instant::now();
        while counter.wakes() == 0 {
            assert!(
                start.elapsed() < PATIENCE,
                "lost wake-up: a polled Done was never woken"
            );
            thread::yield_now();
        }
        assert_eq!(counter.wakes(), 1, "a Done was woken more than once");
    }
    assert!(matches!(poll_once(&mut done, &waker), Poll::Ready(_)));
    let to = rng.below(shared.slots.len() as u64) as usize;
    shared.put(
        to,
        Slot {
            guard: Some(tail_guard),
            ctx: tail,
        },
    );
}

fn worker(shared: &Shared, seed: u64, ops: usize, detach: bool) {
    let mut rng = Rng::new(seed);
    let mut registrations: Vec<AfterFunc> = Vec::new();
    let slots = shared.slots.len() as u64;
    for _ in 0..ops {
        let i = rng.below(slots) as usize;
        match rng.below(100) {
            0..30 => derive(shared, &mut rng),
            30..42 => {
                if let Some(ctx) = shared.clone_ctx(i) {
                    if !ctx.is_done() {
                        shared.tally.blocked.fetch_add(1, Ordering::Relaxed);
                    }
                    let start = Instant::now();
                    let result = ctx.wait_done_timeout(PATIENCE);
                    check_wait(&ctx, result, start.elapsed());
                    shared.tally.waits.fetch_add(1, Ordering::Relaxed);
                }
            }
            42..50 => {
                if let Some(ctx) = shared.clone_ctx(i) {
                    if !ctx.is_done() {
                        shared.tally.blocked.fetch_add(1, Ordering::Relaxed);
                    }
                    let start = Instant::now();
                    let bound = Box::pin(Timer::global().sleep(PATIENCE));
                    let result = match futures::executor::block_on(select(ctx.done(), bound)) {
                        Either::Left((err, _)) => Some(err),
                        Either::Right(_) => None,
                    };
                    check_wait(&ctx, result, start.elapsed());
                    shared.tally.async_waits.fetch_add(1, Ordering::Relaxed);
                }
            }
            50..64 => {
                if let Some((ctx, guard)) = shared.take_guard(i) {
                    if rng.below(2) == 0 {
                        guard.cancel();
                    } else {
                        guard.cancel_with_cause(Cause::msg("stress"));
                    }
                    assert!(ctx.is_done(), "cancel is synchronous");
                    shared.tally.cancels.fetch_add(1, Ordering::Relaxed);
                }
            }
            64..74 => drop(shared.take(i)),
            74..78 if detach => {
                if let Some((_, guard)) = shared.take_guard(i) {
                    guard.detach();
                }
            }
            74..78 => drop(shared.take(i)),
            78..90 => {
                if let Some(ctx) = shared.clone_ctx(i) {
                    let ran = shared.tally.ran.clone();
                    let registration = ctx.after_func(move || {
                        ran.fetch_add(1, Ordering::Relaxed);
                    });
                    shared.tally.registered.fetch_add(1, Ordering::Relaxed);
                    if rng.below(2) == 0 {
                        if registration.stop() {
                            shared.tally.stopped.fetch_add(1, Ordering::Relaxed);
                        }
                    } else {
                        registrations.push(registration);
                        if registrations.len() > 16 {
                            let old = registrations.swap_remove(rng.below(17) as usize);
                            if old.stop() {
                                shared.tally.stopped.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            }
            _ => subtree(shared, &mut rng),
        }
    }
    for registration in registrations {
        if registration.stop() {
            shared.tally.stopped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[test]
fn eight_threads_derive_wait_cancel_and_drop_from_a_shared_root() {
    eight_threads(false);
}

/// BUG: the same run with some guards detached ends with entries left in the
/// root's slab forever (`child_count()` never returns to 0, no timer armed):
/// a live context whose last handle goes away through a child's drop is
/// released by `unlink_chain` → `take_parent`, which moves the node out of
/// its `Arc` (`Arc::into_inner`) and then unregisters it by the address of
/// the moved value, which matches no slab entry. Minimal reproduction:
/// `model.rs`, `regression_context_released_through_its_child_leaves_parent_slab`.
#[test]
fn regression_eight_threads_with_detached_guards_leave_no_stale_entries() {
    eight_threads(true);
}

fn eight_threads(detach: bool) {
    const THREADS: usize = 8;
    const SLOTS: usize = 64;
    let ops = scaled(1_000_000, 100_000);
    let _serial = serial();
    let armed_before = armed();
    let (root, root_guard) = Context::background().with_cancel();
    let shared = Arc::new(Shared {
        root: root.clone(),
        slots: (0..SLOTS).map(|_| Mutex::new(None)).collect(),
        tally: Tally::default(),
    });
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let shared = shared.clone();
            thread::Builder::new()
                .name(format!("stress-{t}"))
                .spawn(move || worker(&shared, 0x5EED + t as u64, ops / THREADS, detach))
                .unwrap()
        })
        .collect();
    for worker in workers {
        worker.join().expect("a worker failed");
    }
    for slot in &shared.slots {
        let old = slot.lock().unwrap().take();
        drop(old);
    }
    let tally = &shared.tally;
    // Every registration either ran or was stopped, never both.
    eventually("every after_func ran or was stopped", || {
        tally.ran.load(Ordering::Relaxed) + tally.stopped.load(Ordering::Relaxed)
            >= tally.registered.load(Ordering::Relaxed)
    });
    thread::sleep(Duration::from_millis(20));
    assert_eq!(
        tally.ran.load(Ordering::Relaxed) + tally.stopped.load(Ordering::Relaxed),
        tally.registered.load(Ordering::Relaxed),
        "an after_func both ran and was stopped"
    );
    // Detached contexts kept alive by a pending after_func end within 2 ms.
    let start = Instant::now();
    while root.child_count() != 0 {
        assert!(
            start.elapsed() < PATIENCE,
            "the root's slab never emptied: child_count() = {}, timer entries armed = {} (start {armed_before})",
            root.child_count(),
            armed()
        );
        thread::sleep(Duration::from_millis(1));
    }
    eventually("the timer heap is back to its start", || {
        armed() == armed_before
    });
    assert!(root.err().is_none(), "nothing canceled the root");
    let waits = tally.waits.load(Ordering::Relaxed) + tally.async_waits.load(Ordering::Relaxed);
    let blocked = tally.blocked.load(Ordering::Relaxed);
    eprintln!(
        "{ops} operations: {waits} waits ({blocked} on a live context), {} derived, {} cancels, {} after_funcs",
        tally.derived.load(Ordering::Relaxed),
        tally.cancels.load(Ordering::Relaxed),
        tally.registered.load(Ordering::Relaxed),
    );
    assert!(waits > ops / 20, "the test exercised waits ({waits})");
    assert!(
        blocked > ops / 500,
        "waits found their context live ({blocked})"
    );
    assert!(tally.derived.load(Ordering::Relaxed) > ops / 5);
    assert!(tally.cancels.load(Ordering::Relaxed) > 0);
    drop(root_guard);
    assert_eq!(root.err(), Some(Error::Canceled));
}

// ---------------------------------------------------------------------------
// Fan-out
// ---------------------------------------------------------------------------

#[test]
fn cancel_fan_out_to_100_000_children_wakes_exactly_that_subtree() {
    const A_CHILDREN: usize = 100_000;
    const B_CHILDREN: usize = 1_000;
    let _serial = serial();
    let (root, root_guard) = Context::background().with_cancel();
    let (a, guard_a) = root.with_cancel();
    let (b, guard_b) = root.with_cancel();

    struct Waiting {
        ctx: Context,
        _guard: CancelGuard,
        done: cancelctx::Done,
        wakes: Arc<CountingWaker>,
    }
    let waiting_on = |parent: &Context, n: usize| -> Vec<Waiting> {
        (0..n)
            .map(|i| {
                // Every 100th child is registered through a value link.
                let (ctx, guard) = if i % 100 == 99 {
                    parent.with_value(i).with_cancel()
                } else {
                    parent.with_cancel()
                };
                let (wakes, waker) = CountingWaker::new();
                let mut done = ctx.done();
                assert!(poll_once(&mut done, &waker).is_pending());
                Waiting {
                    ctx,
                    _guard: guard,
                    done,
                    wakes,
                }
            })
            .collect()
    };
    let mut in_a = waiting_on(&a, A_CHILDREN);
    // Grandchildren, registered under some of A's children.
    let grandparents: Vec<Context> = in_a.iter().step_by(1_000).map(|w| w.ctx.clone()).collect();
    for gp in &grandparents {
        in_a.extend(waiting_on(gp, 10));
    }
    let mut in_b = waiting_on(&b, B_CHILDREN);
    let (a_wakes, a_waker) = CountingWaker::new();
    let mut a_done = a.done();
    assert!(poll_once(&mut a_done, &a_waker).is_pending());
    let (b_wakes, b_waker) = CountingWaker::new();
    let mut b_done = b.done();
    assert!(poll_once(&mut b_done, &b_waker).is_pending());
    let a_blocked = {
        let ctx = in_a[A_CHILDREN / 2].ctx.clone();
        thread::spawn(move || ctx.wait_done_timeout(PATIENCE))
    };
    let b_blocked = {
        let ctx = in_b[B_CHILDREN / 2].ctx.clone();
        thread::spawn(move || ctx.wait_done_timeout(Duration::from_millis(200)))
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let a_func = in_a[7].ctx.after_func(move || tx.send(()).unwrap());
    let b_func = in_b[7].ctx.after_func(|| panic!("B was never canceled"));
    assert_eq!(a.child_count(), A_CHILDREN);
    assert_eq!(b.child_count(), B_CHILDREN);
    assert_eq!(root.child_count(), 2);

    guard_a.cancel();

    // Synchronous: every waiter of A's subtree is woken once cancel returns.
    let not_once = in_a.iter().filter(|w| w.wakes.wakes() != 1).count();
    assert_eq!(
        not_once,
        0,
        "{not_once} of {} wakers in A were not woken exactly once",
        in_a.len()
    );
    assert_eq!(a_wakes.wakes(), 1);
    assert!(in_a.iter().all(|w| w.ctx.err() == Some(Error::Canceled)));
    let woken_in_b = in_b.iter().filter(|w| w.wakes.wakes() != 0).count();
    assert_eq!(
        woken_in_b, 0,
        "{woken_in_b} wakers outside the canceled subtree were woken"
    );
    assert_eq!(b_wakes.wakes(), 0);
    assert!(b.err().is_none() && in_b.iter().all(|w| w.ctx.err().is_none()));
    assert_eq!(a.child_count(), 0);
    assert_eq!(root.child_count(), 1);
    assert_eq!(b.child_count(), B_CHILDREN);
    assert_eq!(
        in_b[7].ctx.child_count(),
        1,
        "B's after_func is still pending"
    );
    assert_eq!(a_blocked.join().unwrap(), Some(Error::Canceled));
    assert_eq!(
        b_blocked.join().unwrap(),
        None,
        "a blocking waiter in B was woken"
    );
    rx.recv_timeout(PATIENCE).expect("the after_func in A ran");
    assert!(!a_func.stop());

    // Re-polling completes without waking again.
    let (_, waker) = CountingWaker::new();
    for w in &mut in_a {
        assert_eq!(poll_once(&mut w.done, &waker), Poll::Ready(Error::Canceled));
    }
    assert!(in_a.iter().all(|w| w.wakes.wakes() == 1));
    drop(in_a);
    drop(grandparents);
    assert!(b_func.stop());
    assert_eq!(in_b[7].ctx.child_count(), 0);

    guard_b.cancel();
    assert!(in_b.iter().all(|w| w.wakes.wakes() == 1));
    assert_eq!(b_wakes.wakes(), 1);
    for w in &mut in_b {
        assert_eq!(poll_once(&mut w.done, &waker), Poll::Ready(Error::Canceled));
    }
    drop(in_b);
    assert_eq!(root.child_count(), 0);
    assert_eq!(
        poll_once(&mut a_done, &a_waker),
        Poll::Ready(Error::Canceled)
    );
    assert_eq!(
        poll_once(&mut b_done, &b_waker),
        Poll::Ready(Error::Canceled)
    );
    drop(root_guard);
}

// ---------------------------------------------------------------------------
// A million timeouts
// ---------------------------------------------------------------------------

/// A million timeouts armed, canceled by dropping their guards (while the
/// contexts live on), then dropped: each leaves the timer heap and the
/// root's slab at cancel time, not at drop time and not at its deadline.
/// Batches of 100 000 bound the memory; each batch cancels in a different
/// order so removals hit every part of the heap.
#[test]
fn a_million_timeouts_canceled_then_dropped_leave_nothing_behind() {
    const TOTAL: usize = 1_000_000;
    const BATCH: usize = 100_000;
    let _serial = serial();
    let armed_before = armed();
    let stats_before = Timer::global().stats();
    let (root, _root_guard) = Context::background().with_cancel();
    let mut rng = Rng::new(1);
    for batch in 0..TOTAL / BATCH {
        let mut contexts = Vec::with_capacity(BATCH);
        let mut guards = Vec::with_capacity(BATCH);
        for i in 0..BATCH {
            // Spread deadlines, far enough that none fires.
            let timeout =
                Duration::from_secs(3600) + Duration::from_nanos(rng.below(1 << 30) + i as u64);
            let (ctx, guard) = root.with_timeout(timeout);
            contexts.push(ctx);
            guards.push(Some(guard));
        }
        assert_eq!(armed(), armed_before + BATCH);
        assert_eq!(root.child_count(), BATCH);
        match batch % 3 {
            0 => guards.clear(),                          // in creation order
            1 => guards.into_iter().rev().for_each(drop), // reverse order
            _ => {
                // A random permutation.
                for i in (1..BATCH).rev() {
                    guards.swap(i, rng.below(i as u64 + 1) as usize);
                }
                for guard in &mut guards {
                    drop(guard.take());
                }
            }
        }
        assert_eq!(
            armed(),
            armed_before,
            "canceled timeouts left the heap at once"
        );
        assert_eq!(
            root.child_count(),
            0,
            "canceled timeouts left the root's slab at once"
        );
        assert!(contexts.iter().all(|c| c.err() == Some(Error::Canceled)));
        assert!(contexts.iter().all(|c| c.deadline().is_some()));
        drop(contexts);
        assert_eq!(armed(), armed_before);
        assert_eq!(root.child_count(), 0);
    }
    let stats = Timer::global().stats();
    assert_eq!(stats.scheduled - stats_before.scheduled, TOTAL as u64);
    assert_eq!(stats.canceled - stats_before.canceled, TOTAL as u64);
    assert_eq!(stats.fired, stats_before.fired, "no 1 h deadline fired");
}
