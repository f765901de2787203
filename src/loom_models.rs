//! Loom models of the races in the cancellation tree.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p cancelctx --release --lib loom_models`.
//! Each model is small enough to be explored exhaustively in seconds. Time
//! is not modeled: deadlines use a manual timer fired by a model thread.

use std::time::{Duration, Instant};

use loom::thread;

use crate::{Cause, Context, Error};

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}

/// How long after its deadline a model fires it.
const PAST: Duration = Duration::from_secs(1);

/// A manual timer and a deadline an hour ahead: nothing fires it but a
/// model thread from [`spawn_firer`].
fn manual_deadline() -> (cancelctx_timer::Timer, Instant) {
    let deadline = Instant::now() + Duration::from_secs(3600);
    (cancelctx_timer::Timer::manual(), deadline)
}

/// A model thread firing what is due on `timer` just after `deadline`.
fn spawn_firer(timer: &cancelctx_timer::Timer, deadline: Instant) -> thread::JoinHandle<()> {
    let timer = timer.clone();
    thread::spawn(move || {
        timer.fire_due(deadline + PAST);
    })
}

/// Cancel vs wait: a waiter that checks, listens and parks is always woken
/// (loom reports a deadlock if the wake-up were lost).
#[test]
fn loom_models_cancel_vs_wait() {
    model(|| {
        let (ctx, guard) = Context::background().with_cancel();
        let canceller = thread::spawn(move || guard.cancel());
        assert_eq!(ctx.wait_done(), Error::Canceled);
        canceller.join().unwrap();
    });
}

/// Cancel vs child creation: the child ends up done, with the parent's
/// cause, and unregistered whichever comes first (invariant 2 of the tree
/// module; a child created after the cancel is built done, reading the
/// cause without registering).
#[test]
fn loom_models_cancel_vs_child_creation() {
    model(|| {
        let (parent, guard) = Context::background().with_cancel();
        let p = parent.clone();
        let creator = thread::spawn(move || {
            let (child, g) = p.with_cancel();
            g.detach();
            child
        });
        guard.cancel_with_cause(Cause::msg("why"));
        let child = creator.join().unwrap();
        assert_eq!(child.err(), Some(Error::Canceled));
        assert_eq!(child.cause().unwrap().to_string(), "why");
        assert_eq!(parent.child_count(), 0);
    });
}

/// Parent vs child cancel: no deadlock, and each `cancel()` returns only
/// once its whole subtree is done (invariant 4), whoever marked it.
#[test]
fn loom_models_parent_vs_child_cancel() {
    model(|| {
        let (parent, gp) = Context::background().with_cancel();
        let (child, gc) = parent.with_cancel();
        let (grandchild, _gg) = child.with_cancel();
        let g2 = grandchild.clone();
        let t = thread::spawn(move || {
            gc.cancel_with_cause(Cause::msg("child"));
            assert!(g2.is_done());
        });
        // A done node has no children, whoever is still walking below it or
        // waiting for that walk (a waiting canceller is not a child).
        let c2 = child.clone();
        let observer = thread::spawn(move || {
            if c2.is_done() {
                assert_eq!(c2.child_count(), 0);
            }
        });
        gp.cancel();
        assert!(child.is_done());
        assert!(grandchild.is_done());
        t.join().unwrap();
        observer.join().unwrap();
        // First cause wins, consistently along the chain.
        let c = child.cause().unwrap().to_string();
        assert_eq!(grandchild.cause().unwrap().to_string(), c);
        assert_eq!(parent.child_count(), 0);
    });
}

/// Timer fire vs cancel vs drop of the same context: one outcome, the
/// entry leaves the heap, nothing panics.
#[test]
fn loom_models_fire_vs_cancel_vs_drop() {
    model(|| {
        let (timer, deadline) = manual_deadline();
        let (ctx, guard) = Context::background().with_deadline_on(deadline, &timer);
        let observer = ctx.clone();
        let firer = spawn_firer(&timer, deadline);
        let canceller = thread::spawn(move || guard.cancel());
        drop(ctx);
        firer.join().unwrap();
        canceller.join().unwrap();
        assert!(matches!(
            observer.err(),
            Some(Error::Canceled | Error::DeadlineExceeded)
        ));
        assert_eq!(timer.stats().armed, 0);
    });
}

/// An observer that read the clock past the deadline (`expiry.rs`) vs the
/// timer firing the same deadline vs a guard's cancel: one end, the first;
/// the child is done with the same error; the entry leaves the heap; every
/// path returns only once the subtree is done.
#[test]
fn loom_models_observer_expiry_vs_fire_vs_cancel() {
    model(|| {
        let (timer, deadline) = manual_deadline();
        let (ctx, guard) = Context::background().with_deadline_on(deadline, &timer);
        let (child, _gc) = ctx.with_cancel();
        let firer = spawn_firer(&timer, deadline);
        let c = child.clone();
        let observer = thread::spawn(move || {
            // What a check does once its clock read finds the deadline passed.
            c.scope().unwrap().expire(deadline + PAST);
            assert!(c.is_done());
        });
        guard.cancel();
        assert!(child.is_done());
        firer.join().unwrap();
        observer.join().unwrap();
        let err = ctx.err();
        assert!(matches!(
            err,
            Some(Error::Canceled | Error::DeadlineExceeded)
        ));
        assert_eq!(child.err(), err);
        assert_eq!(timer.stats().armed, 0);
        assert_eq!(ctx.child_count(), 0);
    });
}

/// A context dropped (unobservable) while its deadline fires: the entry
/// leaves the heap either way.
#[test]
fn loom_models_fire_vs_last_drop() {
    model(|| {
        let (timer, deadline) = manual_deadline();
        let (parent, _gp) = Context::background().with_cancel();
        let (ctx, guard) = parent.with_deadline_on(deadline, &timer);
        guard.detach();
        let firer = spawn_firer(&timer, deadline);
        drop(ctx);
        firer.join().unwrap();
        assert_eq!(timer.stats().armed, 0);
        assert_eq!(parent.child_count(), 0);
    });
}

/// `after_func` stop vs fire: exactly one of them wins.
#[test]
fn loom_models_after_func_stop_vs_fire() {
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicUsize, Ordering};
    model(|| {
        let (ctx, guard) = Context::background().with_cancel();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let registration = ctx.after_func(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        let canceller = thread::spawn(move || guard.cancel());
        let stopped = registration.stop();
        canceller.join().unwrap();
        // Under loom the callback runs inline in the canceller.
        assert_eq!(ran.load(Ordering::SeqCst) + usize::from(stopped), 1);
        assert_eq!(ctx.child_count(), 0);
    });
}

/// A watch (`after_func::watch`, a registration that does not keep its
/// context observable) vs the context's last handle dropped vs its cancel vs
/// the watch's stop: the callback is dropped exactly once, runs at most
/// once and never after a stop that won, and the child leaves its parent.
#[test]
fn loom_models_watch_vs_last_drop_vs_cancel_vs_stop() {
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicUsize, Ordering};

    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    model(|| {
        let (parent, _gp) = Context::background().with_cancel();
        let (ctx, guard) = parent.with_cancel();
        let (ran, dropped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let counted = Counted(dropped.clone());
        let r = ran.clone();
        let watch = crate::after_func::watch(&ctx, move || {
            r.fetch_add(1, Ordering::SeqCst);
            drop(counted);
        });
        let canceller = thread::spawn(move || guard.cancel());
        let stopper = thread::spawn(move || watch.stop());
        drop(ctx);
        canceller.join().unwrap();
        let stopped = stopper.join().unwrap();
        // Under loom the callback runs inline in the canceller.
        assert_eq!(dropped.load(Ordering::SeqCst), 1, "dropped once");
        assert!(ran.load(Ordering::SeqCst) + usize::from(stopped) <= 1);
        assert_eq!(parent.child_count(), 0);
    });
}

/// `cause()` read while cancel writes it: whoever sees the error sees the
/// cause, and it is the one cause written.
#[test]
fn loom_models_cause_vs_cancel() {
    model(|| {
        let (ctx, guard) = Context::background().with_cancel();
        let reader = {
            let ctx = ctx.clone();
            thread::spawn(move || {
                if ctx.err().is_some() {
                    assert_eq!(ctx.cause().unwrap().to_string(), "why");
                }
                if let Some(cause) = ctx.cause() {
                    assert_eq!(cause.to_string(), "why");
                    assert_eq!(ctx.err(), Some(Error::Canceled));
                }
            })
        };
        guard.cancel_with_cause(Cause::msg("why"));
        reader.join().unwrap();
    });
}

/// A `Done` re-polled with a new waker while the context is canceled: the
/// waker registered last when a poll returns `Pending` is always woken (the
/// swap happens under the node lock that `mark` drains under).
#[test]
fn loom_models_done_waker_swap_vs_cancel() {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context as TaskContext, Wake, Waker};

    use loom::sync::atomic::{AtomicBool, Ordering};

    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    model(|| {
        let (ctx, guard) = Context::background().with_cancel();
        let canceller = thread::spawn(move || guard.cancel());
        let first = Arc::new(Flag(AtomicBool::new(false)));
        let second = Arc::new(Flag(AtomicBool::new(false)));
        let (w1, w2) = (Waker::from(first.clone()), Waker::from(second.clone()));
        let mut done = ctx.done();
        let _ = Pin::new(&mut done).poll(&mut TaskContext::from_waker(&w1));
        let last = Pin::new(&mut done).poll(&mut TaskContext::from_waker(&w2));
        canceller.join().unwrap();
        if last.is_pending() {
            assert!(
                second.0.load(Ordering::SeqCst),
                "the latest waker was not woken"
            );
        }
        assert!(
            Pin::new(&mut done)
                .poll(&mut TaskContext::from_waker(&w2))
                .is_ready()
        );
    });
}
