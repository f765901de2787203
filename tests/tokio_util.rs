//! tokio-util interop (feature `tokio-util`): a `Context` drives a
//! `CancellationToken` and a token cancels a `Context`, both ways, with no
//! runtime, and nothing is left behind when either side is dropped or ends
//! first.
//!
//! The leak checks count live heap bytes with a global allocator; every test
//! takes `SERIAL` so that they do not see each other's allocations.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use cancelctx::tokio_util::TokenCanceled;
use cancelctx::{Cause, Context, Error};
use common::{PATIENCE, eventually};
use tokio_util::sync::CancellationToken;

struct Counting;

/// Bytes allocated and not yet freed, by every thread.
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: defers every operation to `System`; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `round` many times and checks that live heap bytes come back to
/// where they were.
///
/// Each round ends with a callback-pool barrier, so that releases handed to
/// the pool never pile up: a burst would make the pool start threads, whose
/// own memory lives on until they retire, and hide a real leak in the noise.
fn assert_no_leak(what: &str, mut round: impl FnMut()) {
    // Warm-up: starts the timer thread and the callback pool, grows slabs.
    for _ in 0..100 {
        round();
        pool_barrier();
    }
    let before = LIVE.load(Ordering::SeqCst);
    const ROUNDS: isize = 1_000;
    for _ in 0..ROUNDS {
        round();
        pool_barrier();
    }
    // Leaking even one small allocation per round shows as >= 16 KiB.
    let limit = 16 * 1024;
    let start = Instant::now();
    loop {
        let grown = LIVE.load(Ordering::SeqCst) - before;
        if grown < limit {
            return;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "{what}: {grown} bytes still live after {ROUNDS} rounds ({} per round)",
            grown / ROUNDS
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// Returns once the callback pool has run a job submitted now, and so has
/// at least started every job submitted before.
fn pool_barrier() {
    let (ctx, guard) = Context::background().with_cancel();
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let _registration = ctx.after_func(move || tx.send(()).unwrap());
    guard.cancel();
    rx.recv_timeout(PATIENCE)
        .expect("the callback pool ran the barrier");
}

/// Sets its flag when dropped: shows a context node was released.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn drop_flag() -> (DropFlag, Arc<AtomicBool>) {
    let flag = Arc::new(AtomicBool::new(false));
    (DropFlag(flag.clone()), flag)
}

// ---------------------------------------------------------------------------
// Context -> token

#[test]
fn token_is_canceled_when_the_context_is() {
    let _serial = serial();
    let (ctx, guard) = Context::background().with_cancel();
    let linked = ctx.cancellation_token();
    let token = linked.token().clone();
    assert!(!token.is_cancelled());
    assert_eq!(ctx.child_count(), 1);
    guard.cancel();
    eventually("token canceled", || token.is_cancelled());
    assert_eq!(ctx.child_count(), 0);
    drop(linked);
}

#[test]
fn token_follows_a_deadline_without_any_runtime() {
    let _serial = serial();
    let start = Instant::now();
    let (ctx, _guard) = Context::background().with_timeout(Duration::from_millis(20));
    let linked = ctx.cancellation_token();
    futures::executor::block_on(linked.token().cancelled());
    assert!(start.elapsed() >= Duration::from_millis(20));
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
}

#[test]
fn token_of_a_done_context_is_canceled_at_once() {
    let _serial = serial();
    let (ctx, guard) = Context::background().with_cancel();
    guard.cancel();
    let linked = ctx.cancellation_token();
    assert!(linked.token().is_cancelled());
    assert_eq!(ctx.child_count(), 0);
}

#[test]
fn dropping_the_token_guard_cancels_the_token_and_unregisters() {
    let _serial = serial();
    let (ctx, _guard) = Context::background().with_cancel();
    let linked = ctx.cancellation_token();
    let child = linked.token().child_token();
    assert_eq!(ctx.child_count(), 1);
    drop(linked);
    assert!(
        child.is_cancelled(),
        "the guard's scope ended: its tokens end too"
    );
    assert_eq!(ctx.child_count(), 0);
    assert!(!ctx.is_done(), "the context is not the token's to cancel");
}

#[test]
fn a_detached_token_lives_until_the_context_ends() {
    let _serial = serial();
    let (ctx, guard) = Context::background().with_cancel();
    let token = ctx.cancellation_token().detach();
    assert!(!token.is_cancelled());
    assert_eq!(ctx.child_count(), 1);
    guard.cancel();
    eventually("detached token canceled", || token.is_cancelled());
    assert_eq!(ctx.child_count(), 0);
}

#[test]
fn a_token_of_a_root_never_ends_on_its_own() {
    let _serial = serial();
    let linked = Context::background().cancellation_token();
    assert!(!linked.token().is_cancelled());
    let token = linked.detach();
    assert!(!token.is_cancelled());
    let linked = Context::background().without_cancel().cancellation_token();
    let token = linked.token().clone();
    drop(linked);
    assert!(token.is_cancelled());
}

#[test]
fn the_token_guard_keeps_a_detached_context_observable_and_then_lets_go() {
    let _serial = serial();
    let (value, released) = drop_flag();
    let (ctx, guard) = Context::background().with_value(value).with_cancel();
    guard.detach();
    let linked = ctx.cancellation_token();
    drop(ctx);
    assert!(
        !released.load(Ordering::SeqCst),
        "the registration observes the context"
    );
    drop(linked);
    assert!(
        released.load(Ordering::SeqCst),
        "dropping the guard released the context"
    );
}

#[test]
fn context_to_token_leaves_nothing_behind() {
    let _serial = serial();
    let (parent, _guard) = Context::background().with_cancel();
    assert_no_leak("guard dropped first", || {
        let (ctx, _g) = parent.with_cancel();
        let linked = ctx.cancellation_token();
        let _clone = linked.token().clone();
        drop(linked);
    });
    assert_no_leak("context ended first", || {
        let (ctx, g) = parent.with_cancel();
        let linked = ctx.cancellation_token();
        drop(g);
        drop(linked);
    });
    assert_no_leak("detached, context ended", || {
        let (ctx, g) = parent.with_cancel();
        let token = ctx.cancellation_token().detach();
        drop(g);
        drop(token);
    });
    assert_eq!(parent.child_count(), 0);
}

// ---------------------------------------------------------------------------
// Token -> context

#[test]
fn canceling_the_token_cancels_the_child_synchronously() {
    let _serial = serial();
    let (parent, _pg) = Context::background().with_cancel();
    let token = CancellationToken::new();
    let (ctx, _guard) = parent.with_cancellation_token(&token);
    let (grandchild, _gg) = ctx.with_cancel();
    assert!(!ctx.is_done());
    assert_eq!(parent.child_count(), 1);
    token.cancel();
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(grandchild.err(), Some(Error::Canceled));
    let cause = ctx.cause().unwrap();
    assert!(cause.is::<TokenCanceled>(), "cause: {cause}");
    assert_eq!(cause.to_string(), "cancellation token canceled");
    assert!(grandchild.cause().unwrap().is::<TokenCanceled>());
    assert!(!parent.is_done());
    assert_eq!(parent.child_count(), 0);
    assert_eq!(ctx.child_count(), 0, "the watch's after_func was stopped");
}

#[test]
fn an_already_canceled_token_gives_a_done_child() {
    let _serial = serial();
    let token = CancellationToken::new();
    token.cancel();
    let (ctx, _guard) = Context::background().with_cancellation_token(&token);
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert!(ctx.cause().unwrap().is::<TokenCanceled>());
}

#[test]
fn a_parent_token_reaches_the_child_through_its_child_token() {
    let _serial = serial();
    let shutdown = CancellationToken::new();
    let connection = shutdown.child_token();
    let (ctx, _guard) = Context::background().with_cancellation_token(&connection);
    shutdown.cancel();
    assert!(ctx.cause().unwrap().is::<TokenCanceled>());
}

#[test]
fn the_child_ends_on_its_own_without_touching_the_token() {
    let _serial = serial();
    let token = CancellationToken::new();
    let (parent, parent_guard) = Context::background().with_cancel();

    let (ctx, guard) = parent.with_cancellation_token(&token);
    drop(guard);
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert!(ctx.cause().unwrap().downcast_ref::<Error>().is_some());

    let (ctx, _guard) = parent.with_cancellation_token(&token);
    parent_guard.cancel_with_cause(Cause::msg("shutting down"));
    assert_eq!(ctx.cause().unwrap().to_string(), "shutting down");

    let (ctx, _guard) = Context::background()
        .with_timeout(Duration::from_millis(5))
        .0
        .with_cancellation_token(&token);
    assert_eq!(
        ctx.err(),
        Some(Error::Canceled),
        "the temporary parent guard was dropped"
    );

    assert!(!token.is_cancelled());
    // The token still works, and a late cancel changes nothing ended.
    token.cancel();
    assert_eq!(ctx.err(), Some(Error::Canceled));
}

#[test]
fn a_child_of_a_done_parent_is_done_and_watches_nothing() {
    let _serial = serial();
    let (parent, guard) = Context::background().with_cancel();
    guard.cancel_with_cause(Cause::msg("gone"));
    let token = CancellationToken::new();
    let (ctx, _g) = parent.with_cancellation_token(&token);
    assert_eq!(ctx.cause().unwrap().to_string(), "gone");
    assert_eq!(ctx.child_count(), 0);
}

#[test]
fn a_detached_linked_child_ends_with_the_token_and_is_freed_when_unobserved() {
    let _serial = serial();
    let token = CancellationToken::new();
    let (ctx, guard) = Context::background().with_cancellation_token(&token);
    guard.detach();
    token.cancel();
    assert!(ctx.cause().unwrap().is::<TokenCanceled>());

    let token = CancellationToken::new();
    let (value, released) = drop_flag();
    let parent = Context::background().with_value(value);
    let (ctx, guard) = parent.with_cancellation_token(&token);
    guard.detach();
    drop(parent);
    drop(ctx);
    assert!(
        released.load(Ordering::SeqCst),
        "nothing observes the child: freed at once"
    );
    token.cancel();
}

/// Regression: a linked child whose every `Context` handle was dropped while
/// its guard lived stayed registered in its parent and with the token (its
/// own watch of the child kept it observable) until the guard was dropped
/// or either side ended.
#[test]
fn regression_a_linked_child_nobody_observes_is_freed_while_its_guard_lives() {
    let _serial = serial();
    let token = CancellationToken::new();
    let (root, _root_guard) = Context::background().with_cancel();
    let (value, released) = drop_flag();
    let mid = root.with_value(value);
    let (ctx, guard) = mid.with_cancellation_token(&token);
    drop(mid);
    assert_eq!(root.child_count(), 1);
    drop(ctx);
    assert_eq!(root.child_count(), 0, "the child left its parent at once");
    assert!(released.load(Ordering::SeqCst), "and its parent chain");
    token.cancel();
    guard.cancel(); // nothing left to cancel
    assert!(!root.is_done());

    // The token's side: what such a child leaves behind while its guard
    // lives is what a plain `with_cancel` child leaves (the node's memory,
    // which its guard's weak handle keeps), not a watch on the token too.
    let token = CancellationToken::new();
    const CHILDREN: usize = 1_000;
    let left_behind = |linked: bool| {
        let mut guards = Vec::with_capacity(CHILDREN);
        pool_barrier();
        let before = LIVE.load(Ordering::SeqCst);
        for _ in 0..CHILDREN {
            let (ctx, guard) = if linked {
                root.with_cancellation_token(&token)
            } else {
                root.with_cancel()
            };
            drop(ctx);
            guards.push(guard);
        }
        let left = LIVE.load(Ordering::SeqCst) - before;
        assert_eq!(root.child_count(), 0);
        drop(guards);
        left
    };
    left_behind(true); // warm-up
    let plain = left_behind(false);
    let linked = left_behind(true);
    assert!(
        linked - plain < 16 * 1024,
        "{CHILDREN} linked children nobody observes left {linked} bytes, plain ones {plain}"
    );
    assert!(!token.is_cancelled());
}

#[test]
fn token_to_context_leaves_nothing_behind() {
    let _serial = serial();
    let token = CancellationToken::new();
    let (parent, _guard) = Context::background().with_cancel();
    assert_no_leak("child guard dropped first", || {
        let (ctx, _g) = parent.with_cancellation_token(&token);
        drop(ctx);
    });
    assert_no_leak("child context kept, guard dropped", || {
        let (ctx, g) = parent.with_cancellation_token(&token);
        drop(g);
        assert!(ctx.is_done());
    });
    assert_no_leak("parent ended first", || {
        let (mid, mid_guard) = parent.with_cancel();
        let (_ctx, _g) = mid.with_cancellation_token(&token);
        drop(mid_guard);
    });
    assert_no_leak("token canceled first", || {
        let token = token.child_token();
        let (ctx, _g) = parent.with_cancellation_token(&token);
        token.cancel();
        assert!(ctx.is_done());
    });
    assert_no_leak("detached, token canceled", || {
        let token = token.child_token();
        let (_ctx, g) = parent.with_cancellation_token(&token);
        g.detach();
        token.cancel();
    });
    assert_eq!(parent.child_count(), 0);
    assert!(!token.is_cancelled());
}

// ---------------------------------------------------------------------------
// Both ways at once, races, nesting

#[test]
fn round_trip_context_token_context() {
    let _serial = serial();
    let (root, guard) = Context::background().with_cancel();
    let linked = root.cancellation_token();
    let (far, _g) = Context::background().with_cancellation_token(linked.token());
    let back = far.cancellation_token();
    guard.cancel_with_cause(Cause::msg("stop"));
    futures::executor::block_on(back.token().cancelled());
    assert!(far.cause().unwrap().is::<TokenCanceled>());
}

/// A token canceled from inside the cancellation of another: the waker of
/// the inner link drops a clone of the very token being canceled. tokio-util
/// 0.7.20 wakes after releasing its locks, so this does not deadlock.
#[test]
fn nested_links_on_related_tokens_do_not_deadlock() {
    let _serial = serial();
    let shutdown = CancellationToken::new();
    let connection = shutdown.child_token();
    let (outer, _g1) = Context::background().with_cancellation_token(&connection);
    let (inner, _g2) = outer.with_cancellation_token(&shutdown);
    let (finished_tx, finished_rx) = std::sync::mpsc::channel();
    let canceller = thread::spawn(move || {
        shutdown.cancel();
        finished_tx.send(()).unwrap();
    });
    finished_rx
        .recv_timeout(PATIENCE)
        .expect("token cancel deadlocked");
    canceller.join().unwrap();
    assert!(outer.is_done() && inner.is_done());
    assert!(inner.cause().unwrap().is::<TokenCanceled>());
}

#[test]
fn racing_ends_on_both_sides() {
    let _serial = serial();
    for round in 0..300 {
        let token = CancellationToken::new();
        let (parent, parent_guard) = Context::background().with_cancel();
        let (ctx, guard) = parent.with_cancellation_token(&token);
        let linked = ctx.cancellation_token();
        let back = linked.token().clone();
        let threads = [
            thread::spawn(move || token.cancel()),
            thread::spawn(move || drop(guard)),
            thread::spawn(move || {
                if round % 2 == 0 {
                    parent_guard.cancel();
                }
            }),
        ];
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(ctx.err(), Some(Error::Canceled));
        eventually("linked token canceled", || back.is_cancelled());
        drop(linked);
        assert_eq!(ctx.child_count(), 0);
    }
}

#[test]
fn works_with_tasks_on_a_tokio_runtime_without_a_time_driver() {
    let _serial = serial();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        // Context deadline -> token -> a task selecting on it.
        let (ctx, _guard) = Context::background().with_timeout(Duration::from_millis(20));
        let linked = ctx.cancellation_token();
        let token = linked.token().clone();
        let task = tokio::spawn(async move {
            tokio::select! {
                () = token.cancelled() => "canceled",
                () = std::future::pending::<()>() => "never",
            }
        });
        assert_eq!(task.await.unwrap(), "canceled");
        assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));

        // Token -> context -> a task awaiting `done()`.
        let shutdown = CancellationToken::new();
        let (ctx, _guard) = Context::background().with_cancellation_token(&shutdown);
        let waiter = tokio::spawn({
            let ctx = ctx.clone();
            async move { ctx.done().await }
        });
        tokio::task::yield_now().await;
        shutdown.cancel();
        assert_eq!(waiter.await.unwrap(), Error::Canceled);
    });
}

/// A waker on one linked child that panics when `token.cancel()` ends the
/// child: the panic is contained in the bridge, so tokio goes on waking the
/// token's other waiters and every other linked child ends too. (Observed
/// before: the panic escaped into tokio's wake loop, which dropped the rest
/// of its batch unwoken, and those children stayed live.)
#[test]
fn regression_a_panicking_waker_on_one_linked_child_costs_the_others_nothing() {
    let _serial = serial();
    struct Panics;
    impl std::task::Wake for Panics {
        fn wake(self: Arc<Self>) {
            panic!("user waker panics");
        }
    }
    let token = CancellationToken::new();
    let mut linked = Vec::new();
    let mut done = None;
    for i in 0..10 {
        let (ctx, guard) = Context::background().with_cancellation_token(&token);
        if i == 5 {
            let mut waiting = ctx.done();
            let waker = std::task::Waker::from(Arc::new(Panics));
            assert!(common::poll_once(&mut waiting, &waker).is_pending());
            done = Some(waiting);
        }
        linked.push((ctx, guard));
    }
    token.cancel();
    let live: Vec<usize> = (0..linked.len())
        .filter(|&i| !linked[i].0.is_done())
        .collect();
    assert!(
        live.is_empty(),
        "still live although the token is canceled: {live:?}"
    );
    assert_eq!(linked[5].0.err(), Some(Error::Canceled));
    drop(done);
}

/// A linked child freed (its last handle dropped) while its token fires:
/// the child leaves its parent either way, nothing hangs.
#[test]
fn a_linked_child_freed_while_its_token_fires() {
    let _serial = serial();
    let (parent, _g) = Context::background().with_cancel();
    for _ in 0..2_000 {
        let token = CancellationToken::new();
        let (ctx, guard) = parent.with_cancellation_token(&token);
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let b = barrier.clone();
        let t = token.clone();
        let firer = thread::spawn(move || {
            b.wait();
            t.cancel();
        });
        barrier.wait();
        drop(ctx);
        firer.join().unwrap();
        drop(guard);
        assert_eq!(parent.child_count(), 0);
    }
}
