//! One dedicated timer thread driving a min-heap of deadlines, with true
//! O(log n) cancellation: the clock behind `cancelctx`.
//!
//! A [`Timer`] runs callbacks ([`Timer::schedule`]), fires [`Alarm`]s without
//! allocating ([`Timer::schedule_alarm`]), and completes runtime-free
//! [`Sleep`] futures ([`Timer::sleep`]). Every schedule returns an [`Entry`]
//! whose [`cancel`](Entry::cancel) removes it from the heap at once, so a
//! timer's memory is bounded by its live entries — the common case of
//! timeouts canceled long before they fire costs nothing more. The crate knows
//! nothing about contexts; it needs no async runtime.
//!
//! # Example
//!
//! ```
//! use std::sync::mpsc;
//! use std::time::{Duration, Instant};
//! use cancelctx_timer::Timer;
//!
//! let timer = Timer::global();
//!
//! // A callback on the timer thread.
//! let (tx, rx) = mpsc::channel();
//! let at = Instant::now() + Duration::from_millis(5);
//! let _entry = timer.schedule(at, move || tx.send("fired").unwrap());
//! assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok("fired"));
//!
//! // A canceled entry never runs, and leaves nothing behind.
//! let entry = timer.schedule(Instant::now() + Duration::from_secs(30), || unreachable!());
//! assert!(entry.cancel());
//!
//! // A future, on any executor.
//! let start = Instant::now();
//! futures::executor::block_on(timer.sleep(Duration::from_millis(5)));
//! assert!(start.elapsed() >= Duration::from_millis(5));
//! ```
//!
//! # Implementation
//!
//! * **Thread.** Each threaded timer owns exactly one thread, named
//!   `cancelctx-timer`. [`Timer::global`]'s and [`Timer::new`]'s start on
//!   their first schedule, [`Timer::try_new`]'s at once; [`Timer::manual`]
//!   has none. A private timer's thread exits when every handle, entry and
//!   sleep of it is gone (see [`Timer`]).
//! * **Queue.** An indexed binary min-heap ordered by `(deadline, insertion
//!   sequence)` — equal deadlines fire FIFO — over a slab whose slots record
//!   their heap position (O(log n) removal) and are reused through a free
//!   list. An entry's key is its slot plus a never-reused sequence number, so
//!   stale keys are harmless.
//! * **Loop.** The thread locks the queue, pops up to a batch of entries due
//!   at `now` (read after waking), unlocks, runs them under `catch_unwind`,
//!   and repeats; when nothing is due it waits on a condition variable until
//!   the earliest deadline. Scheduling a new earliest deadline notifies it.
//!   Callbacks never run under the lock.
//! * **Precision.** Never early. The wait is a condvar timeout, and on Linux
//!   the thread's timer slack is set to 1 ns (`prctl(PR_SET_TIMERSLACK)`), so
//!   on an idle machine entries fire typically within tens of microseconds of
//!   their deadline; under load, add the OS scheduler's delay.
//!   [`Stats::worst_lateness`] reports the worst seen.
//! * **Testing.** `--cfg loom` swaps the crate's synchronization for loom's;
//!   only [`Timer::manual`] works there (there is no real time to drive a
//!   thread). The loom models live in the crate: `RUSTFLAGS="--cfg loom"
//!   cargo test -p cancelctx-timer --release --lib loom`.

#![deny(unsafe_code)]
// Under loom no thread is spawned: the driver loop is exercised only by the
// loom models (test builds), so a plain `--cfg loom` library build has unused
// driver code.
#![cfg_attr(loom, allow(dead_code))]

mod callback;
mod driver;
mod entry;
mod queue;
mod shared;
#[cfg(not(loom))]
#[allow(unsafe_code)]
mod slack;
mod sleep;
mod stats;
mod sync;
mod timer;

#[cfg(all(test, loom))]
mod loom_tests;

pub use crate::{callback::Alarm, entry::Entry, sleep::Sleep, stats::Stats, timer::Timer};
