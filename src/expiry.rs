//! Deadlines fired by the threads that see them pass.
//!
//! The timer thread fires every deadline (`Alarm::fire` in `node.rs`), but
//! only once it gets a CPU, and on a machine whose cores are all busy that
//! can wait for the kernel's next tick, milliseconds late. Two kinds of
//! thread are running at the deadline in exactly that case, and each fires
//! it itself instead of waiting:
//!
//! - a thread blocked in `wait_done` wakes at the deadline by its own timed
//!   park ([`park_toward`]);
//! - a thread that checks a context ([`Context::err`](crate::Context::err),
//!   `is_done`, `cause`, a `Done` poll) reads the clock now and then
//!   ([`observe`]; `remaining` reads it on every call, and fires through
//!   [`expire_if_passed`]): a worker spinning on `is_done()` sees its deadline
//!   within 16 checks of it, whether or not the timer thread has run. (A
//!   woken thread does not always preempt a spinning one at once, so on a
//!   machine busy with such loops this is the difference between
//!   microseconds and milliseconds: `docs/benchmarks.md`, "CPU-bound p99".)
//!
//! Firing from any of these threads is the same act as the timer's
//! ([`CancelNode::expire`] → `Alarm::fire` → `cancel`): the first cancel
//! wins, so racing the timer thread, a guard or another observer is
//! harmless. Nothing here fires early: each fires only a deadline at or
//! before an `Instant::now()` the thread has read (a check compares with
//! the thread's latest reading, taken at most 16 checks ago).

use std::cell::Cell;
use std::sync::Arc;
use std::time::Instant;

use cancelctx_timer::Alarm;

use crate::error::Error;
use crate::node::CancelNode;
use crate::sync;

/// How many checks of live contexts with a deadline a thread makes per clock
/// read. A clock read (`Instant::now()`, ~25 ns here) on every check would
/// make `is_done()` ten times dearer; one read every 16 checks, with the
/// count, adds ~2 ns to each (`err/live`: 1.3–2.2 → 2.6–4.0 ns) and still
/// finds a passed deadline within 16 checks of a loop that polls it. The
/// count is per thread and shared by every context the thread checks, and
/// so is the reading: every check compares its deadline with the thread's
/// latest one, so a loop checking several contexts sees each deadline
/// within 16 checks (a context checked rarely is fired by the timer thread
/// as before).
const CHECKS_PER_CLOCK_READ: u32 = 16;

thread_local! {
    /// This thread's clock: checks left until the next clock read, and the
    /// last reading (a time that has certainly passed).
    static CLOCK: Clock = const {
        Clock {
            left: Cell::new(0),
            last: Cell::new(None),
        }
    };
}

struct Clock {
    left: Cell<u32>,
    last: Cell<Option<Instant>>,
}

/// `node.err()` for a caller that observes the context: also fires the
/// node's deadline (its own or an ancestor's) if it is at or before this
/// thread's latest clock reading, taken once every [`CHECKS_PER_CLOCK_READ`]
/// checks on this thread. Every check compares with that reading, whichever
/// context it was taken for, so a loop checking several contexts sees each
/// one's deadline within [`CHECKS_PER_CLOCK_READ`] checks of it.
#[inline]
pub(crate) fn observe(node: &Arc<CancelNode>) -> Option<Error> {
    let err = node.err();
    if err.is_none() {
        if let Some(at) = node.deadline {
            if let Some(now) = passed(at) {
                return fire_passed(node, now);
            }
        }
    }
    err
}

/// Counts one check of a deadline `at`; reads the clock every
/// [`CHECKS_PER_CLOCK_READ`]th check (and on a thread's first). Returns a
/// clock reading at or after `at`, if this thread has one.
#[inline]
fn passed(at: Instant) -> Option<Instant> {
    CLOCK
        .try_with(|clock| {
            let now = match clock.left.get() {
                0 => {
                    clock.left.set(CHECKS_PER_CLOCK_READ - 1);
                    let now = Instant::now();
                    clock.last.set(Some(now));
                    now
                }
                n => {
                    clock.left.set(n - 1);
                    clock.last.get()?
                }
            };
            (at <= now).then_some(now)
        })
        // Only while the thread's locals are being torn down.
        .unwrap_or_else(|_| Some(Instant::now()).filter(|now| at <= *now))
}

/// Whether the next check reads the clock (tests).
#[cfg(all(test, not(loom)))]
fn clock_read_due() -> bool {
    let due = CLOCK.with(|clock| clock.left.get() == 0);
    let _ = passed(Instant::now());
    due
}

#[cold]
#[inline(never)]
fn fire_passed(node: &Arc<CancelNode>, now: Instant) -> Option<Error> {
    expire_if_passed(node, now);
    node.err()
}

/// Fires `node`'s deadline if it is live and the deadline is at or before
/// `now` (a clock reading the caller has just taken).
pub(crate) fn expire_if_passed(node: &Arc<CancelNode>, now: Instant) {
    if node.deadline.is_some_and(|at| at <= now) && node.err().is_none() {
        node.expire(now);
    }
}

/// One park of a thread waiting on `node`, whose deadline is `at`: until a
/// wake-up or `at` (callers pass an `at` before their own limit). A
/// thread that wakes at `at` and finds the context not yet done fires the
/// deadline itself rather than wait for the timer thread: one wake-up
/// instead of two when the machine is saturated.
/// Returns the deadline to keep parking toward (`None` once it has passed,
/// so a context that still is not done is waited for untimed).
pub(crate) fn park_toward(node: &Arc<CancelNode>, at: Instant) -> Option<Instant> {
    let now = Instant::now();
    if now >= at {
        node.expire(now);
        return None;
    }
    sync::park_timeout(at - now);
    Some(at)
}

impl CancelNode {
    /// Fires the deadline this node has at `now`, whether its own or an
    /// ancestor's, if it has passed. The first cancel wins, so racing the
    /// timer is harmless, and `cancel` returns only once this node is done
    /// (invariant 4 of `node.rs`). Walks up the chain iteratively.
    pub(crate) fn expire(self: &Arc<Self>, now: Instant) {
        let mut node = self.clone();
        loop {
            if node.own_deadline && node.deadline.is_some_and(|d| d <= now) {
                fire_contained(node);
                return;
            }
            node = match node.parent.scope() {
                Some(parent) => parent.clone(),
                None => return,
            };
        }
    }
}

/// Fires `node`'s deadline. User code the end runs (another task's waker, a
/// hook, a value's `Drop`) that panics is contained, as on the timer thread:
/// this thread only saw the deadline first, and which thread fires it is a
/// race.
#[cfg(not(loom))]
fn fire_contained(node: Arc<CancelNode>) {
    crate::pool::run_contained(
        "user code run when a passed deadline ended its context",
        || Alarm::fire(node),
    );
}

/// The loom models let a panic fail the model.
#[cfg(loom)]
fn fire_contained(node: Arc<CancelNode>) {
    Alarm::fire(node);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn one_clock_read_per_sixteen_checks() {
        // A fresh thread: its first check reads the clock.
        std::thread::spawn(|| {
            let due: Vec<bool> = (0..4 * CHECKS_PER_CLOCK_READ)
                .map(|_| clock_read_due())
                .collect();
            let reads: Vec<usize> = due
                .iter()
                .enumerate()
                .filter_map(|(i, &d)| d.then_some(i))
                .collect();
            assert_eq!(reads, [0, 16, 32, 48]);
        })
        .join()
        .unwrap();
    }
}
