//! Fault injection: hostile wakers, values and callbacks.
//!
//! Wakers that cancel contexts from `wake` and from `Drop`, wakers that
//! panic, values whose `Drop` cancels a context or panics while a cancel walk
//! releases them, and callbacks that re-enter the crate from the timer thread
//! and from the callback pool, block, or panic. After each fault the tree
//! must be consistent (done where it should be, out of its parent's slab,
//! nothing poisoned) and later deadlines must still fire.
//!
//! Anything that could hang runs under [`within`], which turns a deadlock
//! into a failure after [`PATIENCE`].
//!
//! Tests named `regression_*` reproduced bugs these tests found (wakers
//! woken or dropped under a lock, a panicking waker stopping the walk, a
//! panic payload killing a pool thread, a replaced deadline cause dropped
//! mid-walk); they pass since the fixes.

mod common;

use std::any::Any;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind, panic_any};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use cancelctx::timer::Timer;
use cancelctx::{CancelGuard, Cause, Context, Error};
use common::{CountingWaker, PATIENCE, eventually, poll_once};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Runs `f` on its own thread; fails the test if it has not finished within
/// [`PATIENCE`] (a deadlock), and re-raises its panic if it panicked.
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = thread::Builder::new()
        .name(format!("within: {what}"))
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawn");
    match rx.recv_timeout(PATIENCE) {
        Ok(value) => {
            handle.join().expect("the thread finished");
            value
        }
        Err(RecvTimeoutError::Timeout) => {
            panic!("deadlock: `{what}` did not finish within {PATIENCE:?}")
        }
        Err(RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(handle.join().expect_err("it panicked"))
        }
    }
}

/// A later deadline still fires through the global timer.
fn deadlines_still_fire() {
    let (ctx, _guard) = Context::background().with_timeout(Duration::from_millis(2));
    assert_eq!(
        ctx.wait_done_timeout(PATIENCE),
        Some(Error::DeadlineExceeded),
        "a 2 ms deadline did not fire within {PATIENCE:?}"
    );
}

/// A waiter on another thread, bounded by [`PATIENCE`].
fn blocking_waiter(ctx: &Context) -> thread::JoinHandle<(Option<Error>, Duration)> {
    let ctx = ctx.clone();
    thread::spawn(move || {
        let start = Instant::now();
        let result = ctx.wait_done_timeout(PATIENCE);
        (result, start.elapsed())
    })
}

/// Joins a [`blocking_waiter`] and asserts it was woken (not timed out) with `want`.
fn assert_woken(waiter: thread::JoinHandle<(Option<Error>, Duration)>, want: Error) {
    let (result, waited) = waiter.join().expect("the waiter thread");
    assert_eq!(result, Some(want));
    assert!(
        waited < PATIENCE,
        "the waiter was never woken: it waited out its {PATIENCE:?}"
    );
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "<non-string panic payload>"
    }
}

type Hook = Box<dyn FnOnce() + Send>;

/// A waker running `on_wake` on its first wake and `on_drop` when its last
/// clone is dropped.
struct HookWaker {
    on_wake: Mutex<Option<Hook>>,
    on_drop: Mutex<Option<Hook>>,
}

impl Wake for HookWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Take the hook first: it may panic, and must not do so under our lock.
        let hook = self.on_wake.lock().unwrap().take();
        if let Some(hook) = hook {
            hook();
        }
    }
}

impl Drop for HookWaker {
    fn drop(&mut self) {
        let hook = self.on_drop.get_mut().unwrap().take();
        if let Some(hook) = hook {
            hook();
        }
    }
}

fn hook_waker(
    on_wake: impl FnOnce() + Send + 'static,
    on_drop: impl FnOnce() + Send + 'static,
) -> Waker {
    Waker::from(Arc::new(HookWaker {
        on_wake: Mutex::new(Some(Box::new(on_wake))),
        on_drop: Mutex::new(Some(Box::new(on_drop))),
    }))
}

fn noop_waker() -> Waker {
    hook_waker(|| {}, || {})
}

/// A waker whose `wake` panics.
fn panicking_waker() -> Waker {
    hook_waker(|| panic!("waker panics"), || {})
}

/// Where something happened: the name of the thread, once it has.
type Witness = Arc<Mutex<Option<String>>>;

fn witness() -> Witness {
    Arc::new(Mutex::new(None))
}

fn record(witness: &Witness) {
    *witness.lock().unwrap() = Some(thread::current().name().unwrap_or("<unnamed>").to_owned());
}

fn seen_on(witness: &Witness) -> Option<String> {
    witness.lock().unwrap().clone()
}

/// A value whose `Drop` records its thread, then panics.
struct PanicOnDrop(Witness);

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        record(&self.0);
        panic!("value drop panics");
    }
}

/// A value whose `Drop` cancels contexts.
struct CancelOnDrop {
    guards: Vec<CancelGuard>,
    dropped: Arc<AtomicBool>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        for guard in self.guards.drain(..) {
            guard.cancel();
        }
        self.dropped.store(true, Ordering::SeqCst);
    }
}

/// A panic payload whose own `Drop` panics.
struct PayloadPanicsOnDrop;

impl Drop for PayloadPanicsOnDrop {
    fn drop(&mut self) {
        panic!("panic payload drop panics");
    }
}

// ---------------------------------------------------------------------------
// Wakers
// ---------------------------------------------------------------------------

#[test]
fn waker_whose_wake_cancels_another_context() {
    let (a, guard_a) = Context::background().with_cancel();
    let (x, guard_x) = Context::background().with_cancel();
    let (x_child, _gxc) = x.with_cancel();
    let x_waiter = blocking_waiter(&x_child);
    let (x_counter, x_waker) = CountingWaker::new();
    let mut x_done = x_child.done();
    assert!(poll_once(&mut x_done, &x_waker).is_pending());

    let mut done = a.done();
    let waker = hook_waker(move || guard_x.cancel(), || {});
    assert!(poll_once(&mut done, &waker).is_pending());
    drop(waker);

    within("cancel a; its waker cancels x", move || guard_a.cancel());
    assert_eq!(a.err(), Some(Error::Canceled));
    assert_eq!(x.err(), Some(Error::Canceled));
    assert_eq!(x_child.err(), Some(Error::Canceled));
    assert_eq!(x_counter.wakes(), 1);
    assert_eq!(x.child_count(), 0);
    assert_woken(x_waiter, Error::Canceled);
    assert_eq!(
        poll_once(&mut done, &noop_waker()),
        Poll::Ready(Error::Canceled)
    );
    assert_eq!(
        poll_once(&mut x_done, &x_waker),
        Poll::Ready(Error::Canceled)
    );
}

/// The timer thread fires `t`; `t`'s waker cancels `t`'s own parent, whose
/// other child has a waiter: re-entry from the timer thread, up the tree.
#[test]
fn waker_on_the_timer_thread_cancels_the_parent_of_its_context() {
    // Retried if the machine is so loaded that the deadline passes before
    // the first poll (the waker would then never be registered).
    for _attempt in 0..5 {
        let (parent, guard_parent) = Context::background().with_cancel();
        let (t, _gt) = parent.with_timeout(Duration::from_millis(20));
        let (sibling, _gs) = parent.with_cancel();
        let (tx, rx) = mpsc::channel();
        let mut done = t.done();
        let waker = hook_waker(
            move || {
                guard_parent.cancel();
                tx.send(thread::current().name().map(String::from)).unwrap();
            },
            || {},
        );
        if poll_once(&mut done, &waker).is_ready() {
            continue;
        }
        drop(waker);
        let sibling_waiter = blocking_waiter(&sibling);
        let woke_on = rx
            .recv_timeout(PATIENCE)
            .expect("the deadline woke the waker");
        assert_eq!(woke_on.as_deref(), Some("cancelctx-timer"));
        assert_eq!(t.err(), Some(Error::DeadlineExceeded));
        assert_eq!(parent.err(), Some(Error::Canceled));
        assert_eq!(parent.child_count(), 0);
        assert_woken(sibling_waiter, Error::Canceled);
        deadlines_still_fire();
        return;
    }
    panic!("the 20 ms deadline passed before the first poll, five times");
}

/// `wake` consumes the waker; its `Drop` (running inside the notification)
/// cancels an unrelated context and the woken context's parent.
#[test]
fn waker_whose_drop_cancels_contexts_when_it_is_woken() {
    let (root, guard_root) = Context::background().with_cancel();
    let (n, guard_n) = root.with_cancel();
    let (sibling, _gs) = root.with_cancel();
    let (x, guard_x) = Context::background().with_cancel();
    let x_waiter = blocking_waiter(&x);
    let sibling_waiter = blocking_waiter(&sibling);
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let mut done = n.done();
    let waker = hook_waker(
        || {},
        move || {
            guard_x.cancel();
            guard_root.cancel();
            flag.store(true, Ordering::SeqCst);
        },
    );
    assert!(poll_once(&mut done, &waker).is_pending());
    drop(waker); // the listener now holds the only clone
    assert!(!dropped.load(Ordering::SeqCst));

    within("cancel n; its waker's drop cancels x and root", move || {
        guard_n.cancel()
    });
    assert!(
        dropped.load(Ordering::SeqCst),
        "the woken waker was dropped"
    );
    assert_eq!(n.err(), Some(Error::Canceled));
    assert_eq!(x.err(), Some(Error::Canceled));
    assert_eq!(root.err(), Some(Error::Canceled));
    assert_eq!(root.child_count(), 0);
    assert_woken(x_waiter, Error::Canceled);
    assert_woken(sibling_waiter, Error::Canceled);
}

/// tokio #5429's shape, pointed at another context: polling with a new
/// waker drops the old one, whose `Drop` cancels a context.
#[test]
fn replaced_waker_whose_drop_cancels_another_context() {
    let (n, guard_n) = Context::background().with_cancel();
    let (x, guard_x) = Context::background().with_cancel();
    let x_waiter = blocking_waiter(&x);
    let mut done = n.done();
    let old = hook_waker(|| {}, move || guard_x.cancel());
    assert!(poll_once(&mut done, &old).is_pending());
    drop(old);
    let (counter, new) = CountingWaker::new();
    let polled = within("re-poll with a new waker", move || {
        let poll = poll_once(&mut done, &new);
        (poll, done)
    });
    let (poll, mut done) = polled;
    assert_eq!(poll, Poll::Pending);
    assert_eq!(
        x.err(),
        Some(Error::Canceled),
        "the replaced waker was dropped"
    );
    assert_woken(x_waiter, Error::Canceled);
    assert!(n.err().is_none());
    drop(guard_n);
    assert_eq!(counter.wakes(), 1, "only the latest waker is woken");
    let (_, waker) = CountingWaker::new();
    assert_eq!(poll_once(&mut done, &waker), Poll::Ready(Error::Canceled));
}

/// BUG (tokio #5429 exactly): polling a `Done` with a new waker drops the
/// old waker while event-listener holds the event's list lock; an old waker
/// whose `Drop` cancels the same context re-enters that lock to notify and
/// deadlocks.
#[test]
fn regression_replaced_waker_whose_drop_cancels_its_own_context() {
    let (n, guard_n) = Context::background().with_cancel();
    let mut done = n.done();
    let old = hook_waker(|| {}, move || guard_n.cancel());
    assert!(poll_once(&mut done, &old).is_pending());
    drop(old);
    within(
        "re-poll with a new waker (the old one cancels n on drop)",
        move || {
            let (_, new) = CountingWaker::new();
            let _ = poll_once(&mut done, &new);
        },
    );
    assert_eq!(n.err(), Some(Error::Canceled));
}

/// BUG: wakers run under event-listener's list lock, so a waker that touches
/// the `Done` futures of the context it was woken for deadlocks: here an
/// inline executor polls the task at once from `wake`, and the ready `Done`
/// drops its listener (the same lock). Dropping a registered `Done` from
/// `wake` or from the waker's `Drop` (a task owned only by its waker) hangs
/// the same way.
#[test]
fn regression_waker_that_polls_a_done_of_its_own_context_inline() {
    let (n, guard_n) = Context::background().with_cancel();
    let task = Arc::new(Mutex::new(Some(n.done())));
    // The task's future is registered with a plain waker first...
    assert!(poll_once(task.lock().unwrap().as_mut().unwrap(), &noop_waker()).is_pending());
    // ...then the "executor" re-polls it with a waker that polls inline.
    let inline = {
        let task = task.clone();
        hook_waker(
            move || {
                let mut slot = task.lock().unwrap();
                let poll = poll_once(slot.as_mut().unwrap(), &noop_waker());
                assert_eq!(poll, Poll::Ready(Error::Canceled));
                *slot = None;
            },
            || {},
        )
    };
    assert!(poll_once(task.lock().unwrap().as_mut().unwrap(), &inline).is_pending());
    drop(inline);
    within("cancel n; its waker polls n's Done inline", move || {
        guard_n.cancel()
    });
    assert!(
        task.lock().unwrap().is_none(),
        "the inline poll completed the task"
    );
}

/// Observed behaviour of a panicking waker: the panic propagates out of
/// `cancel()` to the canceller, and the tree stays consistent: the context
/// and its descendants are done with the right cause, it has left its
/// parent's slab, no lock is poisoned or held, cancel stays idempotent, and
/// other contexts and deadlines keep working. (What is lost is in
/// `regression_panicking_waker_does_not_stop_the_rest_of_the_cancellation`.)
#[test]
fn panicking_waker_propagates_to_the_canceller_and_leaves_the_tree_consistent() {
    let (root, guard_root) = Context::background().with_cancel();
    let (ctx, guard) = root.with_cancel();
    let (child, _gc) = ctx.with_cancel();
    let (other, _go) = root.with_cancel();
    let mut done = ctx.done();
    assert!(poll_once(&mut done, &panicking_waker()).is_pending());
    assert_eq!(root.child_count(), 2);

    let result = catch_unwind(AssertUnwindSafe(|| guard.cancel()));
    let payload = result.expect_err("observed: the waker's panic propagates out of cancel()");
    assert_eq!(panic_message(&*payload), "waker panics");

    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(
        ctx.cause().unwrap().downcast_ref::<Error>(),
        Some(&Error::Canceled)
    );
    assert_eq!(child.err(), Some(Error::Canceled));
    assert_eq!(ctx.child_count(), 0);
    assert_eq!(
        root.child_count(),
        1,
        "the canceled context left its parent's slab"
    );
    assert!(other.err().is_none() && root.err().is_none());
    // Nothing is held or poisoned: the node answers, cancel is idempotent,
    // waits and new children see the end at once.
    guard.cancel();
    guard.cancel_with_cause(cancelctx::Cause::msg("too late"));
    assert_eq!(
        ctx.cause().unwrap().downcast_ref::<Error>(),
        Some(&Error::Canceled)
    );
    assert_eq!(ctx.wait_done_timeout(Duration::ZERO), Some(Error::Canceled));
    let (late, _gl) = ctx.with_cancel();
    assert_eq!(late.err(), Some(Error::Canceled));
    let mut fresh = ctx.done();
    assert_eq!(
        poll_once(&mut fresh, &noop_waker()),
        Poll::Ready(Error::Canceled)
    );
    // The rest of the tree still cancels and wakes normally.
    let (counter, waker) = CountingWaker::new();
    let mut other_done = other.done();
    assert!(poll_once(&mut other_done, &waker).is_pending());
    let other_waiter = blocking_waiter(&other);
    within("cancel root", move || guard_root.cancel());
    assert_eq!(counter.wakes(), 1);
    assert_woken(other_waiter, Error::Canceled);
    assert_eq!(root.child_count(), 0);
    // Dropping the `Done` whose waker panicked underflows event-listener's
    // notified counter in debug builds (see the bug test); contain it here.
    let _ = catch_unwind(AssertUnwindSafe(move || drop(done)));
    deadlines_still_fire();
}

/// BUG: a waker that panics stops the rest of the cancellation. The panic
/// unwinds out of event-listener's notify loop (leaving the remaining
/// listeners of that event unnotified) and out of the deferred work of the
/// cancel walk (leaving every later node of the subtree unnotified and its
/// `after_func` callbacks never started). Dropping the `Done` afterwards then
/// underflows event-listener's `notified` counter ("attempt to subtract with
/// overflow" in debug builds).
#[test]
fn regression_panicking_waker_does_not_stop_the_rest_of_the_cancellation() {
    let (root, guard_root) = Context::background().with_cancel();
    let (a, _ga) = root.with_cancel();
    let (b, _gb) = root.with_cancel();
    let mut a_panics = a.done();
    assert!(poll_once(&mut a_panics, &panicking_waker()).is_pending());
    let (a_counter, a_waker) = CountingWaker::new();
    let mut a_done = a.done();
    assert!(poll_once(&mut a_done, &a_waker).is_pending());
    let (b_counter, b_waker) = CountingWaker::new();
    let mut b_done = b.done();
    assert!(poll_once(&mut b_done, &b_waker).is_pending());
    let (root_counter, root_waker) = CountingWaker::new();
    let mut root_done = root.done();
    assert!(poll_once(&mut root_done, &root_waker).is_pending());
    let (tx, rx) = mpsc::channel();
    let _registration = b.after_func(move || tx.send(()).unwrap());

    let result = catch_unwind(AssertUnwindSafe(|| guard_root.cancel()));
    assert!(result.is_err(), "the waker's panic reaches the canceller");
    assert!(a.is_done() && b.is_done() && root.is_done());
    // Collect the failures first: a failed assertion would unwind through the
    // `Done` drops, whose counter underflow would then abort the process.
    let mut lost = Vec::new();
    if a_counter.wakes() != 1 {
        lost.push("a waiter on the same context as the panicking waker was never woken");
    }
    if b_counter.wakes() != 1 {
        lost.push("a waiter on a sibling in the canceled subtree was never woken");
    }
    if root_counter.wakes() != 1 {
        lost.push("a waiter on the canceled context itself was never woken");
    }
    if rx.recv_timeout(Duration::from_secs(2)).is_err() {
        lost.push("an after_func of the canceled subtree never ran");
    }
    let dropped = catch_unwind(AssertUnwindSafe(move || drop((a_panics, a_done))));
    if dropped.is_err() {
        lost.push(
            "dropping the Done futures afterwards panicked (event-listener's counter underflowed)",
        );
    }
    assert!(
        lost.is_empty(),
        "after a panicking waker:\n  {}",
        lost.join("\n  ")
    );
}

/// A panicking waker woken by the timer thread: the timer catches and counts
/// the panic, the context is done, and later deadlines fire.
#[test]
fn panicking_waker_on_the_timer_thread_is_contained() {
    for _attempt in 0..5 {
        let (ctx, _guard) = Context::background().with_timeout(Duration::from_millis(20));
        let woken = witness();
        let waker = {
            let woken = woken.clone();
            hook_waker(
                move || {
                    record(&woken);
                    panic!("waker panics");
                },
                || {},
            )
        };
        let mut done = ctx.done();
        if poll_once(&mut done, &waker).is_ready() {
            continue; // too loaded: the deadline passed before the poll
        }
        drop(waker);
        // Polled, not waited on: a blocking waiter registered after the
        // panicking waker would never be woken (the bug below).
        eventually("the deadline fired", || ctx.is_done());
        eventually("the waker was woken", || seen_on(&woken).is_some());
        assert_eq!(seen_on(&woken).as_deref(), Some("cancelctx-timer"));
        assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
        assert_eq!(
            ctx.wait_done_timeout(Duration::ZERO),
            Some(Error::DeadlineExceeded)
        );
        // See `regression_panicking_waker_does_not_stop_the_rest_of_the_cancellation`.
        let _ = catch_unwind(AssertUnwindSafe(move || drop(done)));
        // The timer thread caught the panic and lives on.
        deadlines_still_fire();
        return;
    }
    panic!("the 20 ms deadline passed before the first poll, five times");
}

// ---------------------------------------------------------------------------
// Values dropped by a cancel walk
// ---------------------------------------------------------------------------

/// Builds `parent -> value -> b` where `b` is detached and observed only by
/// an `after_func`: once the handles are gone, the canceled subtree itself is
/// the only owner of the value, so canceling `parent` drops it.
fn chain_owned_by_the_subtree<T: Send + Sync + 'static>(
    parent: &Context,
    value: T,
    callback_ran: mpsc::Sender<()>,
) {
    let with_value = parent.with_value(value);
    let (b, guard_b) = with_value.with_cancel();
    guard_b.detach();
    let _registration = b.after_func(move || callback_ran.send(()).unwrap());
}

#[test]
fn value_whose_drop_cancels_contexts_is_dropped_by_a_cancel_walk() {
    let (root, guard_root) = Context::background().with_cancel();
    let (a, guard_a) = root.with_cancel();
    let (sibling, _gs) = root.with_cancel();
    let (x, guard_x) = Context::background().with_cancel();
    let x_waiter = blocking_waiter(&x);
    let sibling_waiter = blocking_waiter(&sibling);
    let dropped = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let value = CancelOnDrop {
        guards: vec![guard_x, guard_root],
        dropped: dropped.clone(),
    };
    chain_owned_by_the_subtree(&a, value, tx);
    assert_eq!(
        a.child_count(),
        1,
        "the detached child lives on for its after_func"
    );
    assert!(!dropped.load(Ordering::SeqCst));

    // The walk reaches the detached child and hands its callback to the
    // pool; the child and the value are released after the walk, and the
    // value's Drop cancels `x` and `a`'s own parent.
    within("cancel a", move || guard_a.cancel());
    eventually("the value was dropped", || dropped.load(Ordering::SeqCst));
    rx.recv_timeout(PATIENCE)
        .expect("the after_func of the subtree ran");
    assert_eq!(a.err(), Some(Error::Canceled));
    assert_eq!(a.child_count(), 0);
    assert_eq!(x.err(), Some(Error::Canceled));
    assert_eq!(root.err(), Some(Error::Canceled));
    assert_eq!(root.child_count(), 0);
    assert_woken(x_waiter, Error::Canceled);
    assert_woken(sibling_waiter, Error::Canceled);
    deadlines_still_fire();
}

/// Observed: a value whose `Drop` panics, released by a cancel walk, panics
/// in the canceller after the walk, the wake-ups and the callback hand-offs
/// are all done; the tree stays consistent.
#[test]
fn value_whose_drop_panics_is_dropped_by_a_cancel_walk() {
    let (root, guard_root) = Context::background().with_cancel();
    let (a, guard_a) = root.with_cancel();
    let (a2, _ga2) = a.with_cancel();
    let (a_counter, a_waker) = CountingWaker::new();
    let mut a_done = a.done();
    assert!(poll_once(&mut a_done, &a_waker).is_pending());
    let (a2_counter, a2_waker) = CountingWaker::new();
    let mut a2_done = a2.done();
    assert!(poll_once(&mut a2_done, &a2_waker).is_pending());
    let (tx2, rx2) = mpsc::channel();
    let _registration = a2.after_func(move || tx2.send(()).unwrap());
    let dropped = witness();
    let (tx, rx) = mpsc::channel();
    chain_owned_by_the_subtree(&a, PanicOnDrop(dropped.clone()), tx);

    let result = within("cancel a", move || {
        catch_unwind(AssertUnwindSafe(|| guard_a.cancel()))
    });
    let payload = result.expect_err("observed: the value's panic propagates out of cancel()");
    assert_eq!(panic_message(&*payload), "value drop panics");
    assert_eq!(
        seen_on(&dropped).as_deref(),
        Some("within: cancel a"),
        "dropped by the canceller"
    );
    assert_eq!(a.err(), Some(Error::Canceled));
    assert_eq!(a2.err(), Some(Error::Canceled));
    assert_eq!(a.child_count(), 0);
    assert_eq!(root.child_count(), 0);
    assert_eq!(a_counter.wakes(), 1);
    assert_eq!(a2_counter.wakes(), 1);
    rx.recv_timeout(PATIENCE)
        .expect("the after_func of the detached child ran");
    rx2.recv_timeout(PATIENCE)
        .expect("the after_func of the sibling ran");
    let root_waiter = blocking_waiter(&root);
    within("cancel root", move || guard_root.cancel());
    assert_woken(root_waiter, Error::Canceled);
    deadlines_still_fire();
}

/// The same chain ended by its own deadline: the panic happens on the timer
/// thread, which catches and counts it and keeps firing.
#[test]
fn value_whose_drop_panics_is_dropped_by_a_deadline() {
    let dropped = witness();
    let (tx, rx) = mpsc::channel();
    {
        let with_value = Context::background().with_value(PanicOnDrop(dropped.clone()));
        let (b, guard_b) = with_value.with_timeout(Duration::from_millis(2));
        guard_b.detach();
        let _registration = b.after_func(move || tx.send(()).unwrap());
    }
    rx.recv_timeout(PATIENCE)
        .expect("the after_func ran at the deadline");
    eventually("the value was dropped", || seen_on(&dropped).is_some());
    // Observed: the chain is released by the timer thread, which catches the
    // panic and keeps firing.
    assert_eq!(seen_on(&dropped).as_deref(), Some("cancelctx-timer"));
    deadlines_still_fire();
}

// ---------------------------------------------------------------------------
// Deadline causes replaced by another end
// ---------------------------------------------------------------------------

/// A deadline cause holding `T`, a user value dropped when its context ends
/// some other way (the end's own cause replaces it).
struct DeadlineCause<T>(T);

impl<T> fmt::Debug for DeadlineCause<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeadlineCause")
    }
}

impl<T> fmt::Display for DeadlineCause<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the deadline passed")
    }
}

impl<T> std::error::Error for DeadlineCause<T> {}

/// A one-hour timeout under `parent` whose deadline cause holds `value`.
fn timeout_with_cause<T: Send + Sync + 'static>(
    parent: &Context,
    value: T,
) -> (Context, CancelGuard) {
    parent.with_timeout_cause(Duration::from_secs(3600), Cause::new(DeadlineCause(value)))
}

/// Observed before the fix: a cancel dropped the replaced cause under the
/// node's lock, mid-walk, so its panic left the parent done but never
/// propagated (the child live, every later cancel of the parent parked for
/// good). Now it is dropped after the walk, as a value's is.
#[test]
fn regression_deadline_cause_whose_drop_panics_is_dropped_after_the_walk() {
    let (parent, guard) = Context::background().with_cancel();
    let guard = Arc::new(guard);
    let dropped = witness();
    let (child, _gc) = timeout_with_cause(&parent, PanicOnDrop(dropped.clone()));
    let (grandchild, _gg) = child.with_cancel();
    let (counter, waker) = CountingWaker::new();
    let mut done = child.done();
    assert!(poll_once(&mut done, &waker).is_pending());

    let first = Arc::clone(&guard);
    let result = within("cancel parent", move || {
        catch_unwind(AssertUnwindSafe(|| first.cancel()))
    });
    let payload = result.expect_err("the cause's panic propagates out of cancel()");
    assert_eq!(panic_message(&*payload), "value drop panics");
    assert_eq!(seen_on(&dropped).as_deref(), Some("within: cancel parent"));
    assert_eq!(child.err(), Some(Error::Canceled));
    assert_eq!(grandchild.err(), Some(Error::Canceled));
    assert_eq!((parent.child_count(), child.child_count()), (0, 0));
    assert_eq!(counter.wakes(), 1);
    within("cancel parent again", move || guard.cancel());

    // A leaf ended by its own guard drops the cause after waking its waiter.
    let dropped = witness();
    let (leaf, leaf_guard) =
        timeout_with_cause(&Context::background(), PanicOnDrop(dropped.clone()));
    let (counter, waker) = CountingWaker::new();
    let mut done = leaf.done();
    assert!(poll_once(&mut done, &waker).is_pending());
    let result = catch_unwind(AssertUnwindSafe(|| leaf_guard.cancel()));
    assert_eq!(panic_message(&*result.unwrap_err()), "value drop panics");
    assert_eq!((leaf.err(), counter.wakes()), (Some(Error::Canceled), 1));
    deadlines_still_fire();
}

/// Two replaced causes whose `Drop` panics, in one walk: the first panic
/// reaches the canceller, the second is contained (dropping them together
/// aborted the process: a panic in a destructor during unwinding).
#[test]
fn two_deadline_causes_whose_drop_panics_in_one_walk() {
    let (parent, guard) = Context::background().with_cancel();
    let (first, second) = (witness(), witness());
    let (a, _ga) = timeout_with_cause(&parent, PanicOnDrop(first.clone()));
    let (b, _gb) = timeout_with_cause(&parent, PanicOnDrop(second.clone()));
    let result = within("cancel parent", move || {
        catch_unwind(AssertUnwindSafe(|| guard.cancel()))
    });
    assert_eq!(panic_message(&*result.unwrap_err()), "value drop panics");
    assert!(seen_on(&first).is_some() && seen_on(&second).is_some());
    assert_eq!(
        (a.err(), b.err()),
        (Some(Error::Canceled), Some(Error::Canceled))
    );
    assert_eq!(parent.child_count(), 0);
    deadlines_still_fire();
}

/// Observed before the fix: the replaced cause's `Drop` ran mid-walk, so one
/// that cancels an ancestor the walk has marked but not finished waited for
/// its own thread's walk: a deadlock.
#[test]
fn regression_deadline_cause_whose_drop_cancels_an_ancestor_being_walked() {
    let (grand, grand_guard) = Context::background().with_cancel();
    let (parent, parent_guard) = grand.with_cancel();
    let dropped = Arc::new(AtomicBool::new(false));
    let cause = CancelOnDrop {
        guards: vec![parent_guard],
        dropped: dropped.clone(),
    };
    let (child, _gc) = timeout_with_cause(&parent, cause);
    within("cancel grand", move || grand_guard.cancel());
    assert!(dropped.load(Ordering::SeqCst));
    for ctx in [&grand, &parent, &child] {
        assert_eq!(ctx.err(), Some(Error::Canceled));
        assert_eq!(ctx.child_count(), 0);
    }
    deadlines_still_fire();
}

// ---------------------------------------------------------------------------
// Callbacks on the timer thread and on the callback pool
// ---------------------------------------------------------------------------

/// What a re-entrant callback saw; checked on the test thread (a failed
/// assertion inside a callback would only be caught and counted).
#[derive(Debug)]
struct Reentry {
    thread: Option<String>,
    created_live: bool,
    stop_first: bool,
    stop_again: bool,
    canceled_subtree: bool,
    stop_after_start: bool,
    nested_timer_canceled: bool,
    short: Context,
}

/// Creates, cancels and stops contexts, and schedules on the global timer,
/// from whatever thread runs it.
fn reenter(guard_x: CancelGuard, ran: mpsc::Sender<&'static str>) -> Reentry {
    let (c, guard_c) = Context::background().with_timeout(Duration::from_secs(3600));
    let (c2, _g2) = c.with_cancel();
    let c3 = c2.with_value(7u32);
    let created_live = !c.is_done() && !c3.is_done() && c.child_count() == 1;
    let stopped = {
        let ran = ran.clone();
        c3.after_func(move || ran.send("a stopped after_func").unwrap())
    };
    let started = {
        let ran = ran.clone();
        c3.after_func(move || ran.send("after_func").unwrap())
    };
    let stop_first = stopped.stop();
    let stop_again = stopped.stop();
    guard_c.cancel();
    let canceled_subtree = c.err() == Some(Error::Canceled)
        && c3.err() == Some(Error::Canceled)
        && c.child_count() == 0
        && c2.child_count() == 0;
    let stop_after_start = started.stop();
    guard_x.cancel();
    let soon = {
        let ran = ran.clone();
        Timer::global().schedule(Instant::now() + Duration::from_millis(20), move || {
            ran.send("a canceled timer entry").unwrap()
        })
    };
    let nested_timer_canceled = soon.cancel();
    let _now = Timer::global().schedule(Instant::now(), move || ran.send("nested timer").unwrap());
    let (short, guard_short) = Context::background().with_timeout(Duration::from_millis(1));
    guard_short.detach();
    Reentry {
        thread: thread::current().name().map(String::from),
        created_live,
        stop_first,
        stop_again,
        canceled_subtree,
        stop_after_start,
        nested_timer_canceled,
        short,
    }
}

fn check_reentry(report: Reentry, thread_prefix: &str, ran: &mpsc::Receiver<&'static str>) {
    let name = report.thread.as_deref().unwrap_or("");
    assert!(
        name.starts_with(thread_prefix),
        "ran on {name:?}, not {thread_prefix}*"
    );
    assert!(
        report.created_live,
        "contexts created inside the callback are live"
    );
    assert!(
        report.stop_first && !report.stop_again,
        "stop() is true exactly once"
    );
    assert!(
        report.canceled_subtree,
        "cancel inside the callback is synchronous"
    );
    assert!(
        !report.stop_after_start,
        "stop() after the context ended is false"
    );
    assert!(
        report.nested_timer_canceled,
        "a timer entry is cancelable from inside"
    );
    let mut seen = [
        ran.recv_timeout(PATIENCE).unwrap(),
        ran.recv_timeout(PATIENCE).unwrap(),
    ];
    seen.sort_unstable();
    assert_eq!(seen, ["after_func", "nested timer"]);
    // The stopped callback and the canceled entry (due 20 ms after it was
    // made) never run: nothing arrives (or every sender is gone).
    let extra = ran.recv_timeout(Duration::from_millis(200));
    assert!(extra.is_err(), "{:?} ran", extra.unwrap());
    assert_eq!(
        report.short.wait_done_timeout(PATIENCE),
        Some(Error::DeadlineExceeded),
        "a deadline armed inside the callback fires"
    );
}

#[test]
fn timer_callbacks_create_cancel_and_stop_contexts() {
    let (x, guard_x) = Context::background().with_cancel();
    let x_waiter = blocking_waiter(&x);
    let (report_tx, report_rx) = mpsc::channel();
    let (ran_tx, ran_rx) = mpsc::channel();
    let _entry = Timer::global().schedule(Instant::now() + Duration::from_millis(1), move || {
        report_tx.send(reenter(guard_x, ran_tx)).unwrap();
    });
    let report = report_rx
        .recv_timeout(PATIENCE)
        .expect("the timer callback ran");
    check_reentry(report, "cancelctx-timer", &ran_rx);
    assert_woken(x_waiter, Error::Canceled);
    deadlines_still_fire();
}

#[test]
fn after_func_callbacks_create_cancel_and_stop_contexts() {
    let (x, guard_x) = Context::background().with_cancel();
    let x_waiter = blocking_waiter(&x);
    let (report_tx, report_rx) = mpsc::channel();
    let (ran_tx, ran_rx) = mpsc::channel();
    let (trigger, guard_trigger) = Context::background().with_cancel();
    let _registration = trigger.after_func(move || {
        report_tx.send(reenter(guard_x, ran_tx)).unwrap();
    });
    drop(guard_trigger);
    let report = report_rx
        .recv_timeout(PATIENCE)
        .expect("the after_func callback ran");
    check_reentry(report, "cancelctx-callback-", &ran_rx);
    assert_woken(x_waiter, Error::Canceled);
    deadlines_still_fire();
}

/// Callbacks that block (more of them than there are cores) delay neither
/// their cancellers, nor other callbacks, nor deadlines.
#[test]
fn blocked_after_func_callbacks_delay_nothing() {
    const BLOCKED: usize = 4;
    let (gate, guard_gate) = Context::background().with_cancel();
    let started = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    for _ in 0..BLOCKED {
        let (ctx, guard) = Context::background().with_cancel();
        let (gate, started, finished) = (gate.clone(), started.clone(), finished.clone());
        let _registration = ctx.after_func(move || {
            started.fetch_add(1, Ordering::SeqCst);
            // Bounded, so a failure cannot leave a thread blocked forever.
            let _ = gate.wait_done_timeout(3 * PATIENCE);
            finished.fetch_add(1, Ordering::SeqCst);
        });
        // The canceller hands the callback off and never waits for it.
        within("cancel a context whose callback blocks", move || {
            guard.cancel()
        });
    }
    eventually("every blocking callback started", || {
        started.load(Ordering::SeqCst) == BLOCKED
    });
    assert_eq!(finished.load(Ordering::SeqCst), 0);

    // Another callback runs, on a deadline, while those block.
    let (tx, rx) = mpsc::channel();
    let (ctx, _guard) = Context::background().with_timeout(Duration::from_millis(2));
    let _registration = ctx.after_func(move || tx.send(()).unwrap());
    rx.recv_timeout(PATIENCE)
        .expect("a callback ran while others were blocked");
    deadlines_still_fire();

    guard_gate.cancel();
    eventually("the blocked callbacks finished", || {
        finished.load(Ordering::SeqCst) == BLOCKED
    });
}

#[test]
fn panicking_after_func_callbacks_are_contained() {
    const PANICS: usize = 8;
    let before = cancelctx::stats().callbacks_panicked;
    let (ctx, guard) = Context::background().with_cancel();
    let mut registrations = Vec::new();
    for _ in 0..PANICS {
        registrations.push(ctx.after_func(|| panic!("after_func panics")));
    }
    let (tx, rx) = mpsc::channel();
    registrations.push(ctx.after_func(move || tx.send(()).unwrap()));
    assert_eq!(ctx.child_count(), PANICS + 1);
    within("cancel", move || guard.cancel());
    assert_eq!(ctx.child_count(), 0);
    rx.recv_timeout(PATIENCE)
        .expect("the well-behaved callback ran");
    eventually("every callback panic was counted", || {
        cancelctx::stats().callbacks_panicked >= before + PANICS
    });
    assert!(registrations.iter().all(|r| !r.stop()), "all had started");
    // The pool lives on.
    let (tx, rx) = mpsc::channel();
    let (ctx, guard) = Context::background().with_cancel();
    let _registration = ctx.after_func(move || tx.send(()).unwrap());
    drop(guard);
    rx.recv_timeout(PATIENCE).expect("a later callback ran");
    deadlines_still_fire();
}

#[test]
fn panicking_timer_callbacks_are_contained() {
    const PANICS: u64 = 8;
    let timer = Timer::global();
    let before = timer.stats().panicked;
    let now = Instant::now();
    for i in 0..PANICS {
        let _entry = timer.schedule(now + Duration::from_micros(100 * i), || {
            panic!("timer callback panics")
        });
    }
    // A payload whose own drop panics must not take the thread down either.
    let _entry = timer.schedule(now, || panic_any(PayloadPanicsOnDrop));
    let (tx, rx) = mpsc::channel();
    let _entry = timer.schedule(now + Duration::from_millis(1), move || tx.send(()).unwrap());
    rx.recv_timeout(PATIENCE)
        .expect("a well-behaved timer callback ran after the panics");
    eventually("every timer panic was counted", || {
        timer.stats().panicked > before + PANICS
    });
    deadlines_still_fire();
    assert_eq!(
        futures::executor::block_on(Context::background().sleep(Duration::from_millis(1))),
        Ok(())
    );
}

/// BUG: the callback pool catches a callback's panic but then drops the
/// panic payload outside `catch_unwind`; a payload whose `Drop` panics
/// unwinds the pool thread, which dies without decrementing the pool's
/// thread count. After `MAX_THREADS` (256) such deaths the pool believes it
/// is full with no thread alive, and every later `after_func` callback in
/// the process is queued forever. (The timer thread guards against exactly
/// this; the pool does not.)
///
/// It runs in a child process: it breaks the pool for the rest of the
/// process.
#[test]
fn regression_after_func_panic_payload_whose_drop_panics() {
    const CHILD: &str = "CANCELCTX_FAULTS_POOL_CHILD";
    if std::env::var_os(CHILD).is_some() {
        std::panic::set_hook(Box::new(|_| {}));
        for _ in 0..260 {
            let (ctx, guard) = Context::background().with_cancel();
            let _registration = ctx.after_func(|| panic_any(PayloadPanicsOnDrop));
            drop(guard);
        }
        let (tx, rx) = mpsc::channel();
        let (ctx, guard) = Context::background().with_cancel();
        let _registration = ctx.after_func(move || tx.send(()).unwrap());
        drop(guard);
        let _ = std::panic::take_hook(); // the default hook again, for the message below
        assert!(
            rx.recv_timeout(PATIENCE).is_ok(),
            "after 260 panics with a panicking payload, a well-behaved callback never ran \
             (callback_threads = {})",
            cancelctx::stats().callback_threads
        );
        return;
    }
    let log =
        std::env::temp_dir().join(format!("cancelctx-faults-pool-{}.log", std::process::id()));
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "regression_after_func_panic_payload_whose_drop_panics",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > 4 * PATIENCE {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let tail: Vec<&str> = output.lines().rev().take(8).collect();
    assert!(
        status.is_some_and(|s| s.success()),
        "child process failed ({status:?}); last lines of its stderr:\n{}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
}
