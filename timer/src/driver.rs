//! The timer thread's park loop, written over an injectable clock.

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use crate::callback::Callback;
use crate::shared::{BATCH, ParkState, Shared};
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

    /// Releases `guard` (a lock of `shared.park`) and blocks until notified
    /// on `shared.cv` or until `until` passes (forever if `None`); returns
    /// with the lock held again. May return early (spurious wake-ups are
    /// fine: the loop re-checks).
    fn park<'a>(
        &self,
        shared: &'a Shared,
        guard: MutexGuard<'a, ParkState>,
        until: Option<Instant>,
    ) -> MutexGuard<'a, ParkState>;
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
        guard: MutexGuard<'a, ParkState>,
        until: Option<Instant>,
    ) -> MutexGuard<'a, ParkState> {
        match until {
            Some(deadline) => shared.cv.wait_until(guard, deadline),
            None => shared.cv.wait(guard),
        }
    }
}

/// The driver loop: until shutdown, fire what is due in every shard, then
/// park until the earliest deadline.
///
/// * `now` is read at the start of every turn (after every wake-up) and only
///   entries with `deadline <= now` fire, so nothing fires early.
/// * Entries fire in deadline order across shards, at most [`BATCH`] per
///   shard-lock acquisition; callbacks run with no lock held, each under
///   `catch_unwind` (see [`Shared::fire_pass`]).
/// * The turn protocol (`begin_turn` … `dirty` check, `publish_park`, wait,
///   all but the scan under the park lock) guarantees that an insert of an
///   earlier deadline into any shard is either seen by the scan or wakes the
///   thread: see the module docs of `shared.rs`.
///
/// On shutdown, entries still scheduled are removed and dropped unrun (outside
/// the locks).
pub(crate) fn run<P: Park>(shared: &Shared, park: &P) {
    let mut batch: Vec<(Instant, Callback)> = Vec::with_capacity(BATCH);
    let mut st = shared.park.lock();
    while !st.shutdown {
        shared.begin_turn(&mut st);
        drop(st);
        let (_fired, until) = shared.fire_pass(park.now(), &mut batch);
        st = shared.park.lock();
        if st.dirty || st.shutdown {
            continue; // something may have been missed: scan again
        }
        shared.publish_park(&st, until);
        st.waiting = true;
        st = park.park(shared, st, until);
        st.waiting = false;
        st.wakeups += 1;
        // Straight to the next `begin_turn`, without releasing the lock.
    }
    shared.stop(&mut st);
    drop(st);
    let mut leftovers = Vec::new();
    shared.drain_into(&mut leftovers);
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

/// [`spawn`], with the thread under the real-time FIFO policy at
/// `priority`. Waits until the thread has tried: if the OS refuses the
/// policy, the thread exits without driving anything and the error is
/// returned.
#[cfg(not(loom))]
pub(crate) fn spawn_realtime(shared: Arc<Shared>, priority: u8) -> io::Result<()> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name(THREAD_NAME.to_owned())
        .spawn(move || {
            crate::slack::minimize();
            let result = crate::slack::set_realtime(priority);
            let ok = result.is_ok();
            // The spawner waits for this message: it cannot be gone.
            let _ = tx.send(result);
            if ok {
                run(&shared, &SystemPark);
            }
        })?;
    rx.recv().unwrap_or_else(|_| {
        Err(io::Error::other(
            "cancelctx-timer: the timer thread exited before setting its priority",
        ))
    })
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

/// Under loom: see [`spawn`].
#[cfg(loom)]
pub(crate) fn spawn_realtime(shared: Arc<Shared>, _priority: u8) -> io::Result<()> {
    spawn(shared)
}
