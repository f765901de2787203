//! State shared by a timer's handles, its entries and its thread.
//!
//! Everything here runs under one mutex, held only for queue operations and
//! counter updates: no callback, waker or user `Drop` ever runs while it is
//! held (values leaving the queue are returned to the caller and dropped
//! after the guard).

use std::task::Waker;
use std::time::Instant;

use crate::callback::{Callback, run_batch};
use crate::queue::{Key, Queue};
use crate::stats::{Counters, Stats};
use crate::sync::{Condvar, Mutex};

/// Most entries fired per lock acquisition: bounds how long inserters and
/// cancelers can be kept waiting by a burst of due entries.
pub(crate) const BATCH: usize = 256;

/// Who drives the timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// No thread, ever: only `fire_due` fires entries.
    Manual,
    /// A thread will be spawned by the first insert.
    Idle,
    /// The thread is running (or being spawned).
    Running,
    /// The thread has exited after shutdown.
    Stopped,
}

/// Everything behind the lock.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) queue: Queue<Callback>,
    pub(crate) counters: Counters,
    pub(crate) mode: Mode,
    /// Set when the last [`crate::Timer`] handle (and so the last entry) is gone.
    pub(crate) shutdown: bool,
    /// What the thread is waiting for: `None` while it runs (it will read the
    /// queue before it parks again), `Some(None)` parked with nothing
    /// scheduled, `Some(Some(t))` parked until `t`. An insert notifies only
    /// when it would otherwise be missed: an entry earlier than `t`.
    pub(crate) parked: Option<Option<Instant>>,
}

impl State {
    /// Pops up to [`BATCH`] entries due at `now` into `out` (which must be
    /// empty) and accounts for them. Returns how many.
    pub(crate) fn pop_due(&mut self, now: Instant, out: &mut Vec<(Instant, Callback)>) -> usize {
        debug_assert!(out.is_empty());
        let n = self.queue.pop_due(now, out, BATCH);
        if let Some(&(earliest, _)) = out.first() {
            // Popped in deadline order: the first one is the latest to fire.
            let late = now.saturating_duration_since(earliest);
            self.counters.worst_lateness = self.counters.worst_lateness.max(late);
            self.counters.fired += n as u64;
        }
        n
    }
}

/// The queue, its lock and the condition variable the thread parks on.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    /// Waited on by the timer thread only; notified when an insert creates a
    /// new earliest deadline and at shutdown.
    pub(crate) cv: Condvar,
}

impl Shared {
    pub(crate) fn new(mode: Mode) -> Self {
        Self {
            state: Mutex::new(State {
                queue: Queue::new(),
                counters: Counters::default(),
                mode,
                shutdown: false,
                parked: None,
            }),
            cv: Condvar::new(),
        }
    }

    /// Schedules `callback` at `at`. Returns its key and `true` if the caller
    /// has claimed the job of spawning the thread (mode was `Idle`).
    ///
    /// The decision to notify is taken under the lock, and the thread computes
    /// its wake-up time under the same lock and releases it only by waiting on
    /// the condvar: an insert either lands before that computation (and is
    /// seen) or after the wait began (and the notify wakes it). No lost
    /// wake-up; see the loom models.
    pub(crate) fn insert(&self, at: Instant, callback: Callback) -> (Key, bool) {
        let mut st = self.state.lock();
        let spawn = st.mode == Mode::Idle;
        if spawn {
            st.mode = Mode::Running;
        }
        let (key, new_top) = st.queue.insert(at, callback);
        st.counters.scheduled += 1;
        // A parked thread wakes by itself at `t`: it needs a notify only for an
        // entry due before then. (Saves a futex wake per insert in the common
        // case of steady timeouts, whose new deadlines come after the thread's.)
        let notify = new_top
            && st.mode == Mode::Running
            && match st.parked {
                Some(Some(t)) => at < t,
                Some(None) => true,
                None => false,
            };
        if notify {
            // The thread will recompute once it runs; later inserts need not
            // notify again.
            st.parked = None;
        }
        drop(st);
        if notify {
            self.cv.notify_one();
        }
        (key, spawn)
    }

    /// Undoes an insert whose thread spawn failed: removes the entry and lets
    /// a later insert try spawning again. The value is returned to be dropped
    /// outside the lock.
    pub(crate) fn abort_spawn(&self, key: Key) -> Option<Callback> {
        let mut st = self.state.lock();
        st.mode = Mode::Idle;
        let removed = st.queue.remove(key);
        if removed.is_some() {
            st.counters.scheduled -= 1;
        }
        removed
    }

    /// Removes `key` if it is still scheduled, counting a cancellation. The
    /// value is returned so the caller drops it outside the lock.
    pub(crate) fn cancel(&self, key: Key) -> Option<Callback> {
        let mut st = self.state.lock();
        let removed = st.queue.remove(key);
        if removed.is_some() {
            st.counters.canceled += 1;
        }
        removed
    }

    /// `true` if `key` is still scheduled.
    pub(crate) fn contains(&self, key: Key) -> bool {
        self.state.lock().queue.contains(key)
    }

    /// Makes `waker` the one a pending sleep entry wakes. Returns `false` if
    /// the entry is gone (it fired).
    ///
    /// Cloning and dropping wakers runs executor code that may re-enter this
    /// timer (e.g. dropping the last waker drops a task owning a `Sleep`), so
    /// both happen outside the lock: check, clone unlocked, then swap.
    pub(crate) fn register_waker(&self, key: Key, waker: &Waker) -> bool {
        {
            let mut st = self.state.lock();
            match st.queue.get_mut(key) {
                None => return false,
                Some(Callback::Wake(current)) if current.will_wake(waker) => return true,
                Some(_) => {}
            }
        }
        let new = Callback::Wake(waker.clone());
        let mut st = self.state.lock();
        let (old, pending) = match st.queue.get_mut(key) {
            Some(slot) => (std::mem::replace(slot, new), true),
            None => (new, false),
        };
        drop(st);
        drop(old);
        pending
    }

    /// Fires every entry due at `now` on the calling thread, in batches of
    /// [`BATCH`] with the lock released while callbacks run. Returns how many
    /// fired.
    pub(crate) fn fire_due(&self, now: Instant) -> usize {
        let mut batch = Vec::new();
        let mut total = 0;
        loop {
            let n = self.state.lock().pop_due(now, &mut batch);
            if n == 0 {
                return total;
            }
            total += n;
            let panicked = run_batch(&mut batch);
            if panicked > 0 {
                self.state.lock().counters.panicked += panicked;
            }
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.state.lock().queue.next_deadline()
    }

    pub(crate) fn stats(&self) -> Stats {
        let st = self.state.lock();
        st.counters.snapshot(st.queue.len())
    }

    /// Tells the thread (if any) to exit. Called when the last handle drops.
    pub(crate) fn shutdown(&self) {
        let mut st = self.state.lock();
        st.shutdown = true;
        let running = st.mode == Mode::Running;
        drop(st);
        if running {
            self.cv.notify_one();
        }
    }
}
