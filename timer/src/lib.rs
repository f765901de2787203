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
//!   their first schedule, [`Timer::try_new`]'s and
//!   [`Timer::try_with_realtime_priority`]'s at once; [`Timer::manual`]
//!   has none. A private timer's thread exits when every handle, entry and
//!   sleep of it is gone (see [`Timer`]).
//! * **Queue.** An indexed binary min-heap ordered by `(deadline, insertion
//!   sequence)` — equal deadlines fire FIFO — over a slab whose slots record
//!   their heap position (O(log n) removal) and are reused through a free
//!   list. An entry's key is its slot plus a never-reused sequence number, so
//!   stale keys are harmless. A heap node is 16 bytes (the deadline as
//!   nanoseconds from a base far in the past, the slot, the low 32 bits of
//!   the insertion count); a slot with its callback, 40.
//! * **Shards.** A threaded timer has several such queues (twice the
//!   available parallelism, a power of two, at most 8), each behind its own
//!   lock on its own cache line; a manual timer has one. A thread always
//!   schedules on the same shard (threads are numbered round-robin on their
//!   first schedule), and an entry's key names its shard (in the low bits of
//!   its sequence number), so cancels go straight there: threads scheduling
//!   and canceling at the same time take different locks. Equal deadlines
//!   from one thread stay FIFO; across threads their order is unspecified
//!   (see [*Order*](Timer#order)). Stats are per-shard counters, summed with
//!   every shard lock held (so they stay exact).
//! * **Loop.** The thread reads `now`, then fires everything due across the
//!   shards in deadline order (a merge of the shard tops, up to a batch per
//!   lock, callbacks run under `catch_unwind` with no lock held), and parks on
//!   a condition variable until the earliest top it saw.
//! * **Wake-up.** The thread publishes its park state in one atomic — "scanning
//!   or parked with nothing", "parked until `t`", or "wake-up pending" — which
//!   inserters read without a lock, and only when their entry became their
//!   shard's earliest. Only an entry due before `t` (or any, while scanning)
//!   takes the small park lock to mark the turn dirty and notify, so steady
//!   timeouts scheduled after the earliest one cost no lock beyond their
//!   shard's and no futex wake. The park decision and the wait happen under
//!   that lock, so no wake-up is lost; the argument is in `shared.rs` and the
//!   loom models check it.
//! * **Precision.** Never early. The wait is a condvar timeout, and on Linux
//!   the thread's timer slack is set to 1 ns (`prctl(PR_SET_TIMERSLACK)`), so
//!   on an idle machine entries fire typically within tens of microseconds of
//!   their deadline; under load, add the OS scheduler's delay.
//!   [`Stats::worst_lateness`] reports the worst seen.
//! * **Testing.** `--cfg loom` swaps the crate's synchronization for loom's;
//!   only [`Timer::manual`] works there (there is no real time to drive a
//!   thread). The loom models live in the crate: `RUSTFLAGS="--cfg loom"
//!   CARGO_TARGET_DIR=target/loom cargo test -p cancelctx-timer --release
//!   --lib loom`.

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
