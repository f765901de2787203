//! Go's `context` for Rust: cancellation, deadlines and request-scoped values
//! carried down a call tree, on every executor and on plain threads.
//!
//! A [`Context`] is a cheap handle. Derive children with
//! [`with_cancel`](Context::with_cancel), [`with_timeout`](Context::with_timeout),
//! [`with_deadline`](Context::with_deadline) and
//! [`with_value`](Context::with_value); observe them with
//! [`err`](Context::err), [`is_done`](Context::is_done) and
//! [`cause`](Context::cause); wait with [`done`](Context::done) (a future that
//! works on tokio, async-std, smol or any other executor) or
//! [`wait_done`](Context::wait_done) (blocks a plain thread).
//!
//! What it fixes in Go's design:
//!
//! - **Leaks cannot be written.** Each derived context comes with a
//!   [`CancelGuard`] that cancels it when dropped (Go's `defer cancel()`,
//!   automatic), and a context nobody can observe any more releases its
//!   parent's record of it and its timer at once.
//! - **Deadlines fire on time under load.** They are driven by one dedicated
//!   timer thread ([`cancelctx_timer`]), not by a busy scheduler.
//!
//! Go's semantics are kept: causes ([`Cause`], first cause wins), `after_func`,
//! `without_cancel`, a child's deadline capped by its parent's, a past
//! deadline done at construction, synchronous idempotent cancel.
//!
//! # Examples
//!
//! The one correct wait loop, with no runtime:
//!
//! ```
//! use std::thread;
//! use std::time::Duration;
//! use cancelctx::{Context, Error};
//!
//! let (ctx, _guard) = Context::background().with_timeout(Duration::from_millis(20));
//! let worker = {
//!     let ctx = ctx.clone();
//!     thread::spawn(move || {
//!         let mut rounds = 0u64;
//!         while !ctx.is_done() {
//!             rounds += 1; // a slice of CPU-bound work
//!             thread::yield_now();
//!         }
//!         rounds
//!     })
//! };
//! assert_eq!(ctx.wait_done(), Error::DeadlineExceeded);
//! assert!(worker.join().unwrap() > 0);
//! ```
//!
//! The same context awaited on any executor:
//!
//! ```
//! use cancelctx::{Context, Error};
//!
//! let (ctx, guard) = Context::background().with_cancel();
//! std::thread::spawn(move || guard.cancel());
//! assert_eq!(futures::executor::block_on(ctx.done()), Error::Canceled);
//! ```
//!
//! # Coming from Go or tokio-util
//!
//! | Go `context` / `errgroup` | tokio-util | cancelctx |
//! |---|---|---|
//! | `ctx, cancel := context.WithCancel(parent)`; `defer cancel()` | `let token = parent.child_token();` | `let (ctx, _guard) = parent.with_cancel();` (the guard's drop is the `defer`; keep it named, never `_`: see [`with_cancel`](Context::with_cancel) ("Keep the guard in a named binding")) |
//! | `cancel()` | `token.cancel()` | `guard.cancel()` (there is no `ctx.cancel()`: only the guard's owner cancels) |
//! | `WithCancelCause` + `cancel(err)` | | `with_cancel` + [`guard.cancel_with_cause(err)`](CancelGuard::cancel_with_cause) |
//! | `WithTimeout`, `WithDeadline` | (needs a runtime timer) | [`with_timeout`](Context::with_timeout), [`with_deadline`](Context::with_deadline) |
//! | `<-ctx.Done()` | `token.cancelled().await` | [`ctx.done().await`](Context::done) (async), [`ctx.wait_done()`](Context::wait_done) (threads) |
//! | `select { case <-ctx.Done(): case v := <-ch: }` | `token.run_until_cancelled(fut).await` | [`ctx.run(fut).await`](Context::run) → `Result<T, Error>` |
//! | `ctx.Err() != nil` | `token.is_cancelled()` | [`ctx.is_done()`](Context::is_done); [`ctx.err()`](Context::err) is an `Option<Error>` |
//! | `context.Cause(ctx)` | | [`ctx.cause()`](Context::cause) → `Option<Cause>` |
//! | `context.AfterFunc(ctx, f)` | | [`ctx.after_func(f)`](Context::after_func) (`let _ =` if the stop handle is not needed) |
//! | `WithValue(ctx, key{}, v)`, `ctx.Value(key{}).(T)` | | [`ctx.with_value(Key(v))`](Context::with_value), `ctx.value::<Key>()`: keyed by type, use a newtype |
//! | `WithoutCancel` | | [`without_cancel`](Context::without_cancel) |
//! | `time.Sleep` bounded by `ctx` | | [`ctx.sleep(d).await`](Context::sleep), [`ctx.sleep_blocking(d)`](Context::sleep_blocking) |
//! | `g, ctx := errgroup.WithContext(ctx)`; `g.Go(f)`; `g.Wait()` | | [`Group::new(&ctx)`](Group::new), `group.spawn(fut)`, `group.wait().await` (members run only while `wait` is polled); on threads, [`Group::scope`] |
//! | | `token.drop_guard()` | the default: every derived context comes with its [`CancelGuard`] |
//! | | a `CancellationToken` for a tokio-util API | feature `tokio-util`: `ctx.cancellation_token()`, `ctx.with_cancellation_token(&token)` |
//!
//! ```
//! use std::time::Duration;
//! use cancelctx::{Context, Error};
//!
//! // ctx, cancel := context.WithTimeout(parent, time.Second); defer cancel()
//! let parent = Context::background();
//! let (ctx, guard) = parent.with_timeout(Duration::from_secs(1));
//! // select { case <-ctx.Done(): return ctx.Err(); case <-work: }
//! let work = std::future::pending::<()>();
//! guard.cancel(); // cancel()
//! assert_eq!(futures::executor::block_on(ctx.run(work)), Err(Error::Canceled));
//! ```
//!
//! # When a deadline is seen
//!
//! The timer thread ends each context whose deadline passes as soon as it
//! gets a CPU. Threads that are already running at the deadline do not wait
//! for it:
//!
//! - a thread blocked in [`wait_done`](Context::wait_done) (or
//!   `wait_done_timeout`, `wait_done_deadline`, `sleep_blocking`) wakes at
//!   the deadline by itself, and ends the context if the timer thread has
//!   not yet;
//! - a thread that checks a live context with a deadline
//!   ([`err`](Context::err), [`is_done`](Context::is_done),
//!   [`cause`](Context::cause), or a poll of [`done`](Context::done)) reads
//!   the clock once every 16 such checks ([`remaining`](Context::remaining)
//!   on every call), compares every check's deadline with its latest
//!   reading, and does the same if the deadline has passed. A CPU-bound loop that
//!   checks `is_done()` sees its deadline within 16 iterations, even when
//!   every core is busy and the timer thread cannot run; one that checks
//!   several contexts sees each one's within 16 checks.
//!
//! Either way the context ends exactly as if the timer had fired it
//! (`DeadlineExceeded`, the deadline's cause, its children, its
//! `after_func` callbacks), never before the deadline, and the first end
//! wins. Ending it does, on that thread, what any cancel does: it wakes the
//! context's waiters and drops the contexts the cancel released (with their
//! values); `after_func` callbacks still run on the callback pool. So a
//! check may run a waker or a value's `Drop`, as
//! [`CancelGuard::cancel`] may. Unlike a cancel's, a panic there (another
//! task's waker, say) is not passed to the thread that merely saw the
//! deadline first: it is reported on stderr and contained, as on the timer
//! thread, and the check (or wait) returns `DeadlineExceeded`.
//!
//! # Implementation
//!
//! - **Timer thread.** One thread, `cancelctx-timer`, started on the first
//!   deadline armed, drives a min-heap of deadlines with true O(log n)
//!   removal: a context canceled before its deadline takes its entry out at
//!   once. On Linux its timer slack is set to the minimum. On a machine
//!   whose cores are all busy, the thread may wait for a CPU after waking (a
//!   scheduler tick, 4 ms at `HZ=250`); where that matters, make the global
//!   timer a real-time one at startup, before the first deadline:
//!
//!   ```
//!   use cancelctx::timer::Timer;
//!
//!   // Needs CAP_SYS_NICE or `ulimit -r` >= 10 on Linux; otherwise keep the default.
//!   if let Ok(timer) = Timer::try_with_realtime_priority(10) {
//!       let _ = Timer::init_global(timer);
//!   }
//!   ```
//! - **Callback pool.** Threads named `cancelctx-callback-N`, started on the
//!   first [`after_func`](Context::after_func) callback that runs, grown when
//!   all are busy, retired after 10 s idle.
//! - **Waiting**: each cancelable context keeps a slab of wakers (a `Done`
//!   future's, or one that unparks a blocked thread); the canceller wakes
//!   them after releasing every lock, so a waker may re-enter the crate.
//! - **No recursion** over the tree: cancel, drop and value lookup are loops,
//!   so million-deep chains work on small stacks.
//!
//! See `ARCHITECTURE.md` in the repository for the code map and invariants.
//!
//! # Features
//!
//! All off by default; the default build depends on no async runtime.
//!
//! - `metrics` — counters of contexts created and ended (by kind: explicit,
//!   deadline, parent) and a deadline-lateness histogram through the
//!   [`metrics`](https://docs.rs/metrics) facade; `Stats::record_gauges`.
//! - `tracing` — a DEBUG event (target `cancelctx`) when a context ends, with
//!   its [name](Context::named), kind and cause. (No span per context: a
//!   context is not an execution scope — it crosses threads and tasks — so
//!   the event carries the name instead.)
//! - `registry` — `registry::snapshot` lists live contexts as a tree, and
//!   `registry::LeakCheck` fails tests that leak contexts.
//! - `tower` — `tower::ServerLayer` and `tower::ClientLayer` carry deadlines
//!   across processes in the gRPC `grpc-timeout` and Connect
//!   `connect-timeout-ms` headers.
//! - `tokio-util` — a tokio-util `CancellationToken` and a `Context` cancel
//!   each other, both ways, with no leak when either side is dropped.

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// The README's examples, compiled and run by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod after_func;
mod context;
mod done;
mod error;
mod expiry;
mod group;
mod guard;
mod link;
#[cfg(all(test, loom))]
mod loom_models;
mod node;
mod observe;
#[cfg(not(loom))]
mod pool;
mod run;
mod slab;
mod stats;
mod sync;

pub mod grpc_timeout;
#[cfg(feature = "registry")]
#[cfg_attr(docsrs, doc(cfg(feature = "registry")))]
pub mod registry;
#[cfg(feature = "tokio-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio-util")))]
pub mod tokio_util;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod tower;

pub use crate::after_func::AfterFunc;
pub use crate::context::Context;
pub use crate::done::Done;
pub use crate::error::{Cause, Error};
pub use crate::group::{Group, GroupScope, Spawner, Wait};
pub use crate::guard::CancelGuard;
pub use crate::observe::ContextCounts;
pub use crate::run::{Run, RunStream, Sleep};
pub use crate::stats::{Stats, stats};

/// The timer crate behind every deadline, for direct use (`Timer::global()`).
pub use cancelctx_timer as timer;
