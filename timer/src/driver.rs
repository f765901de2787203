//! The timer thread's park loop, written over an injectable clock.

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use crate::callback::{Callback, run_batch};
use crate::shared::{BATCH, Mode, Shared, State};
use crate::sync::{Arc, MutexGuard};

/// Name of every timer thread.
pub(crate) const THREAD_NAME: &str = "cancelctx-timer";

/// The driver's view of time: a clock and a way to wait for a deadline.
///
/// The real thread uses [`SystemPark`]; the loom models inject a fixed clock
/// and untimed waits, so "parks until the deadline" becomes "parks until
/// notified" and a lost wake-up shows up as a deadlock.
pub(crate) trait Park {
    /// The current time. Read after every wake-up.
    fn now(&self) -> Instant;

    /// Releases `guard` (a lock of `shared.state`) and blocks until notified
    /// on `shared.cv` or until `until` passes (forever if `None`); returns
    /// with the lock held again. May return early (spurious wake-ups are
    /// fine: the loop re-checks).
    fn park<'a>(
        &self,
        shared: &'a Shared,
        guard: MutexGuard<'a, State>,
        until: Option<Instant>,
    ) -> MutexGuard<'a, State>;
}

/// The real clock and condvar timeouts.
#[cfg(not(loom))]
#[derive(Debug, Clone, Copy)]
pub(crate) struct SystemPark;

#[cfg(not(loom))]
impl Park for SystemPark {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn park<'a>(
        &self,
        shared: &'a Shared,
        guard: MutexGuard<'a, State>,
        until: Option<Instant>,
    ) -> MutexGuard<'a, State> {
        match until {
            Some(deadline) => shared.cv.wait_until(guard, deadline),
            None => shared.cv.wait(guard),
        }
    }
}

/// The driver loop: until shutdown, fire what is due, then park until the
/// earliest deadline.
///
/// * `now` is read after every wake-up and only entries with
///   `deadline <= now` fire, so nothing fires early.
/// * At most [`BATCH`] entries fire per lock acquisition; callbacks run with
///   the lock released, each under `catch_unwind`.
/// * The next deadline is computed under the lock and the lock is released
///   only by the condvar wait itself, so an insert of an earlier deadline
///   either is seen by that computation or notifies the waiting thread.
///
/// On shutdown, entries still scheduled are removed and dropped unrun (outside
/// the lock).
pub(crate) fn run<P: Park>(shared: &Shared, park: &P) {
    let mut batch: Vec<(Instant, Callback)> = Vec::with_capacity(BATCH);
    let mut st = shared.state.lock();
    while !st.shutdown {
        let now = park.now();
        if st.pop_due(now, &mut batch) > 0 {
            drop(st);
            let panicked = run_batch(&mut batch);
            st = shared.state.lock();
            st.counters.panicked += panicked;
            continue;
        }
        let until = st.queue.next_deadline();
        st.parked = Some(until);
        st = park.park(shared, st, until);
        st.parked = None;
        st.counters.wakeups += 1;
    }
    st.mode = Mode::Stopped;
    let mut leftovers = Vec::new();
    st.queue.drain_into(&mut leftovers);
    drop(st);
    for callback in leftovers {
        // User `Drop` code: keep a panic in it from unwinding the thread.
        let _ = catch_unwind(AssertUnwindSafe(move || drop(callback)));
    }
}

/// Spawns the thread named [`THREAD_NAME`] driving `shared` until shutdown.
#[cfg(not(loom))]
pub(crate) fn spawn(shared: Arc<Shared>) -> io::Result<()> {
    std::thread::Builder::new()
        .name(THREAD_NAME.to_owned())
        .spawn(move || {
            crate::slack::minimize();
            run(&shared, &SystemPark);
        })
        .map(drop)
}

/// Under loom there is no real time to drive: only manual timers work.
#[cfg(loom)]
pub(crate) fn spawn(shared: Arc<Shared>) -> io::Result<()> {
    drop(shared);
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "cancelctx-timer: timer threads are unavailable under cfg(loom); use Timer::manual()",
    ))
}
