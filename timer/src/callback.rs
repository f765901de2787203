//! What an entry does when it fires, and running it safely.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::task::Waker;

use crate::sync::{AlarmArc, AlarmWeak};

/// An object the timer can fire without a boxed closure.
///
/// Pass a `Weak<dyn Alarm>` to [`Timer::schedule_alarm`](crate::Timer::schedule_alarm):
/// the weak pointer is stored inline in the timer's slab, so scheduling
/// allocates nothing (amortized), and the timer never keeps the alarm alive.
/// When the deadline passes, the timer thread upgrades the pointer (outside its
/// lock) and, if the alarm still exists, calls [`fire`](Alarm::fire).
///
/// `fire` runs on the timer thread (or on the thread calling
/// [`Timer::fire_due`](crate::Timer::fire_due)); keep it short and
/// non-blocking — every other entry of the timer waits while it runs. A panic
/// in `fire` is caught and counted in [`Stats::panicked`](crate::Stats::panicked).
///
/// The receiver is always the standard library's `Arc`, also under
/// `--cfg loom` (loom has no `Weak`).
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::sync::{Arc, Weak};
/// use std::time::Instant;
/// use cancelctx_timer::{Alarm, Timer};
///
/// struct Flag(AtomicBool);
///
/// impl Alarm for Flag {
///     fn fire(self: Arc<Self>) {
///         self.0.store(true, Ordering::SeqCst);
///     }
/// }
///
/// let timer = Timer::manual();
/// let flag = Arc::new(Flag(AtomicBool::new(false)));
/// let weak: Weak<dyn Alarm> = Arc::downgrade(&flag) as Weak<dyn Alarm>;
/// let now = Instant::now();
/// let _entry = timer.schedule_alarm(now, weak);
/// assert_eq!(timer.fire_due(now), 1);
/// assert!(flag.0.load(Ordering::SeqCst));
/// ```
pub trait Alarm: Send + Sync + 'static {
    /// Called once, on the timer's thread, when the deadline has passed and
    /// the alarm is still alive.
    fn fire(self: AlarmArc<Self>);
}

/// The action stored in a queue slot.
pub(crate) enum Callback {
    /// A boxed closure from [`crate::Timer::schedule`].
    Func(Box<dyn FnOnce() + Send + 'static>),
    /// An alarm from [`crate::Timer::schedule_alarm`]; a dead pointer does nothing.
    Alarm(AlarmWeak<dyn Alarm>),
    /// The waker of a pending [`crate::Sleep`].
    Wake(Waker),
}

impl std::fmt::Debug for Callback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Callback::Func(_) => "Func",
            Callback::Alarm(_) => "Alarm",
            Callback::Wake(_) => "Wake",
        })
    }
}

impl Callback {
    /// Runs the action, catching a panic. Returns `false` if it panicked.
    ///
    /// Must be called with no lock held: the action is user code and may call
    /// back into the timer. Everything the action owns is dropped here too,
    /// also outside the lock.
    pub(crate) fn run(self) -> bool {
        let result = catch_unwind(AssertUnwindSafe(move || match self {
            Callback::Func(f) => f(),
            Callback::Alarm(weak) => {
                if let Some(alarm) = weak.upgrade() {
                    alarm.fire();
                }
            }
            Callback::Wake(waker) => waker.wake(),
        }));
        match result {
            Ok(()) => true,
            Err(payload) => {
                // Dropping the payload runs user code too; a second panic
                // there must not take the timer thread down either.
                let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
                false
            }
        }
    }
}

/// Runs every action in `batch` (draining it), returning how many panicked.
pub(crate) fn run_batch(batch: &mut Vec<(std::time::Instant, Callback)>) -> u64 {
    let mut panicked = 0;
    for (_, callback) in batch.drain(..) {
        if !callback.run() {
            panicked += 1;
        }
    }
    panicked
}
