//! Integration tests of `Group` (async members driven by `Wait`) and
//! `Group::scope` (members on scoped threads).

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use cancelctx::{Cause, Context, Error, Group, GroupScope, Spawner, Wait};
use common::{CountingWaker, DropFlag, Gauge, PATIENCE, YieldNow, eventually, poll_once};
use futures::channel::oneshot;
use futures::executor::block_on;
use futures::future::FusedFuture;

#[derive(Debug, PartialEq)]
struct Boom(&'static str);
impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "boom: {}", self.0)
    }
}
impl std::error::Error for Boom {}

fn boom(cause: &Cause) -> Option<&'static str> {
    cause.downcast_ref::<Boom>().map(|b| b.0)
}

fn assert_send<T: Send>() {}
fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn public_types_are_send_and_sync_where_it_matters() {
    assert_send::<Group<'static>>();
    assert_send::<Wait<'static, 'static>>();
    assert_send_sync::<Spawner<'static>>();
    fn scope_is_send_sync(_: &GroupScope<'_, '_>) {
        assert_send_sync::<GroupScope<'_, '_>>();
    }
    Group::scope(&Context::background(), scope_is_send_sync).unwrap();
}

// ---------------------------------------------------------------- async group

#[test]
fn first_error_wins_and_cancels_the_context_with_that_cause() {
    let mut group = Group::new(&Context::background());
    let ctx = group.context().clone();
    let watcher = ctx.clone();
    group.spawn(async move {
        watcher.done().await;
        Err(Boom("second").into())
    });
    group.spawn(async { Err(Boom("first").into()) });
    let err = block_on(group.wait()).unwrap_err();
    assert_eq!(boom(&err), Some("first"));
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(boom(&ctx.cause().unwrap()), Some("first"));
    // Go's errOnce: a later wait reports the same first error.
    group.spawn(async { Err(Boom("third").into()) });
    assert_eq!(boom(&block_on(group.wait()).unwrap_err()), Some("first"));
}

#[test]
fn wait_waits_for_every_member_even_after_a_failure() {
    let finished = AtomicBool::new(false);
    let mut group = Group::new(&Context::background());
    let (ctx, finished) = (group.context().clone(), &finished);
    group.spawn(async move {
        assert_eq!(ctx.done().await, Error::Canceled);
        // Cleanup after cancellation still runs to the end.
        Context::background()
            .sleep(Duration::from_millis(20))
            .await
            .unwrap();
        finished.store(true, Ordering::SeqCst);
        Ok(())
    });
    group.spawn(async { Err(Cause::msg("failed")) });
    let err = block_on(group.wait()).unwrap_err();
    assert_eq!(err.to_string(), "failed");
    drop(group);
    assert!(finished.load(Ordering::SeqCst));
}

#[test]
fn no_members() {
    let mut group = Group::new(&Context::background());
    assert!(!group.context().is_done());
    assert!(block_on(group.wait()).is_ok());
    // Wait cancels the group's context, as Go's WithContext documents.
    let cause = group.context().cause().unwrap();
    assert_eq!(cause.downcast_ref::<Error>(), Some(&Error::Canceled));
    // Hand-polled: ready at the first poll, without a wake.
    let mut group = Group::default();
    let (counter, waker) = CountingWaker::new();
    assert!(matches!(
        poll_once(&mut group.wait(), &waker),
        Poll::Ready(Ok(()))
    ));
    assert_eq!(counter.wakes(), 0);
}

#[test]
fn limit_is_respected() {
    let gauge = Gauge::default();
    let done = AtomicUsize::new(0);
    let mut group = Group::new(&Context::background());
    group.set_limit(3);
    for _ in 0..30 {
        group.spawn(async {
            gauge.enter();
            for _ in 0..3 {
                YieldNow::default().await;
            }
            gauge.leave();
            done.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
    }
    block_on(group.wait()).unwrap();
    drop(group);
    assert_eq!(done.load(Ordering::SeqCst), 30);
    assert_eq!(gauge.max(), 3);
}

#[test]
fn raising_the_limit_admits_queued_members() {
    let gauge = Gauge::default();
    let mut group = Group::new(&Context::background());
    group.set_limit(1);
    for _ in 0..4 {
        group.spawn(async {
            gauge.enter();
            YieldNow::default().await;
            gauge.leave();
            Ok(())
        });
    }
    group.set_limit(None);
    block_on(group.wait()).unwrap();
    drop(group);
    assert_eq!(gauge.max(), 4);
}

#[test]
fn a_queued_member_waits_its_turn() {
    let order = Mutex::new(Vec::new());
    let (tx, rx) = oneshot::channel::<()>();
    let mut group = Group::new(&Context::background());
    group.set_limit(1);
    group.spawn(async {
        order.lock().unwrap().push("a starts");
        rx.await.unwrap();
        order.lock().unwrap().push("a ends");
        Ok(())
    });
    group.spawn(async {
        order.lock().unwrap().push("b");
        Ok(())
    });
    group.spawn(async {
        order.lock().unwrap().push("c");
        Ok(())
    });
    let (counter, waker) = CountingWaker::new();
    let mut wait = group.wait();
    assert!(poll_once(&mut wait, &waker).is_pending());
    assert_eq!(*order.lock().unwrap(), ["a starts"]);
    tx.send(()).unwrap();
    assert_eq!(counter.wakes(), 1);
    assert!(matches!(poll_once(&mut wait, &waker), Poll::Ready(Ok(()))));
    drop(wait);
    drop(group);
    assert_eq!(
        order.into_inner().unwrap(),
        ["a starts", "a ends", "b", "c"]
    );
}

#[test]
fn try_spawn_refuses_when_full_and_accepts_after_a_member_finishes() {
    let ran = AtomicBool::new(false);
    let (tx_a, rx_a) = oneshot::channel::<()>();
    let (tx_k, rx_k) = oneshot::channel::<()>();
    let mut group = Group::new(&Context::background());
    group.set_limit(2);
    assert!(
        group
            .try_spawn(async { rx_a.await.map_err(Cause::new) })
            .is_ok()
    );
    assert!(
        group
            .try_spawn(async { rx_k.await.map_err(Cause::new) })
            .is_ok()
    );
    let member = async {
        ran.store(true, Ordering::SeqCst);
        Ok(())
    };
    let member = group.try_spawn(member).unwrap_err(); // handed back, unpolled
    let spawner = group.spawner();
    let (counter, waker) = CountingWaker::new();
    let mut wait = group.wait();
    assert!(poll_once(&mut wait, &waker).is_pending());
    let member = spawner.try_spawn(member).unwrap_err();
    tx_a.send(()).unwrap();
    assert!(poll_once(&mut wait, &waker).is_pending()); // `a` ended, `k` runs
    assert!(spawner.try_spawn(member).is_ok());
    let wakes = counter.wakes();
    assert!(poll_once(&mut wait, &waker).is_pending());
    assert!(ran.load(Ordering::SeqCst));
    assert!(wakes >= 2);
    tx_k.send(()).unwrap();
    assert!(matches!(poll_once(&mut wait, &waker), Poll::Ready(Ok(()))));
}

#[test]
fn member_panic_cancels_the_group_and_reaches_the_waiter_last() {
    let seen_cause = Mutex::new(None);
    let finished = AtomicBool::new(false);
    let mut group = Group::new(&Context::background());
    let ctx = group.context().clone();
    let (seen, finished) = (&seen_cause, &finished);
    group.spawn(async move {
        ctx.done().await;
        *seen.lock().unwrap() = ctx.cause().map(|c| c.to_string());
        Context::background()
            .sleep(Duration::from_millis(10))
            .await
            .unwrap();
        finished.store(true, Ordering::SeqCst);
        Ok(())
    });
    group.spawn(async { panic!("kaboom") });
    let payload = catch_unwind(AssertUnwindSafe(|| block_on(group.wait()))).unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"kaboom"));
    drop(group);
    assert!(
        finished.load(Ordering::SeqCst),
        "the panic waited for the other member"
    );
    let seen = seen_cause.into_inner().unwrap();
    assert_eq!(seen.as_deref(), Some("group member panicked: kaboom"));
}

#[test]
fn panic_payloads_are_kept_and_a_panic_beats_an_error() {
    let mut group = Group::default();
    group.spawn(async { Err(Boom("error").into()) });
    group.spawn(async { std::panic::panic_any(42_i32) });
    group.spawn(async { panic!("second {}", "panic") });
    let payload = catch_unwind(AssertUnwindSafe(|| block_on(group.wait()))).unwrap_err();
    assert_eq!(
        payload.downcast_ref::<i32>(),
        Some(&42),
        "the first panic wins"
    );
    // The error came first, so it is the context's cause; it is also kept.
    assert_eq!(boom(&group.context().cause().unwrap()), Some("error"));
    assert_eq!(boom(&block_on(group.wait()).unwrap_err()), Some("error"));

    let mut group = Group::default();
    let n = std::hint::black_box(7); // a run-time argument: a `String` payload
    group.spawn(async move { panic!("formatted {n}") });
    let payload = catch_unwind(AssertUnwindSafe(|| block_on(group.wait()))).unwrap_err();
    assert_eq!(
        payload.downcast_ref::<String>().map(String::as_str),
        Some("formatted 7")
    );
    let cause = group.context().cause().unwrap().to_string();
    assert_eq!(cause, "group member panicked: formatted 7");
}

#[test]
fn hand_polled_with_exact_wake_counts() {
    let (outer, guard) = Context::background().with_cancel();
    let mut group = Group::new(&Context::background());
    let waker_slot: Arc<Mutex<Option<Waker>>> = Arc::default();
    let slot = waker_slot.clone();
    let mut polls = 0;
    group.spawn(std::future::poll_fn(move |cx| {
        polls += 1;
        *slot.lock().unwrap() = Some(cx.waker().clone());
        if polls < 3 {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }));
    group.spawn(async move {
        outer.done().await;
        Ok(())
    });
    let (counter, waker) = CountingWaker::new();
    let mut wait = group.wait();
    assert!(poll_once(&mut wait, &waker).is_pending());
    assert_eq!(counter.wakes(), 0);
    // Two wakes of one member before the driver runs: one driver wake.
    let member_waker = waker_slot.lock().unwrap().clone().unwrap();
    member_waker.wake_by_ref();
    member_waker.wake_by_ref();
    assert_eq!(counter.wakes(), 1);
    assert!(poll_once(&mut wait, &waker).is_pending());
    assert_eq!(counter.wakes(), 1, "a poll does not wake by itself");
    member_waker.wake_by_ref();
    assert_eq!(counter.wakes(), 2);
    assert!(poll_once(&mut wait, &waker).is_pending()); // member one done
    guard.cancel();
    assert_eq!(counter.wakes(), 3);
    assert!(matches!(poll_once(&mut wait, &waker), Poll::Ready(Ok(()))));
    assert!(wait.is_terminated());
}

#[test]
fn a_self_waking_member_yields_between_rounds() {
    let mut group = Group::default();
    group.spawn(async {
        for _ in 0..3 {
            YieldNow::default().await;
        }
        Ok(())
    });
    let (counter, waker) = CountingWaker::new();
    let mut wait = group.wait();
    for round in 1..=3 {
        assert!(poll_once(&mut wait, &waker).is_pending());
        assert_eq!(counter.wakes(), round);
    }
    assert!(poll_once(&mut wait, &waker).is_ready());
}

#[test]
#[should_panic(expected = "`Wait` polled after completion")]
fn wait_polled_after_completion_panics() {
    let mut group = Group::default();
    let mut wait = group.wait();
    let (_counter, waker) = CountingWaker::new();
    let _ = poll_once(&mut wait, &waker);
    let _ = poll_once(&mut wait, &waker);
}

#[test]
fn dropping_wait_drops_the_members_and_cancels_the_context() {
    let running = Arc::new(AtomicBool::new(false));
    let queued = Arc::new(AtomicBool::new(false));
    let mut group = Group::new(&Context::background());
    group.set_limit(1);
    let flag = DropFlag(running.clone());
    group.spawn(async move {
        let _flag = flag;
        std::future::pending::<()>().await;
        Ok(())
    });
    let flag = DropFlag(queued.clone());
    group.spawn(async move {
        let _flag = flag;
        Ok(())
    });
    let (_counter, waker) = CountingWaker::new();
    let mut wait = group.wait();
    assert!(poll_once(&mut wait, &waker).is_pending());
    assert!(!running.load(Ordering::SeqCst));
    drop(wait);
    assert!(running.load(Ordering::SeqCst) && queued.load(Ordering::SeqCst));
    assert_eq!(group.context().err(), Some(Error::Canceled));
    // Still usable: later members run on the next wait.
    group.spawn(async { Ok(()) });
    assert!(block_on(group.wait()).is_ok());
}

#[test]
fn dropping_the_group_drops_members_unpolled_and_spawners_stop() {
    let polled = AtomicBool::new(false);
    let dropped = Arc::new(AtomicBool::new(false));
    let group = Group::new(&Context::background());
    let ctx = group.context().clone();
    let spawner = group.spawner();
    let flag = DropFlag(dropped.clone());
    group.spawn(async {
        let _flag = flag;
        polled.store(true, Ordering::SeqCst);
        Ok(())
    });
    drop(group);
    assert!(dropped.load(Ordering::SeqCst));
    assert!(!polled.load(Ordering::SeqCst));
    assert!(ctx.is_done());
    let late = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(late.clone());
    spawner.spawn(async move {
        let _flag = flag;
        Ok(())
    });
    assert!(
        late.load(Ordering::SeqCst),
        "spawn after the group is gone drops the member"
    );
    assert!(spawner.try_spawn(async { Ok(()) }).is_err());
    assert!(format!("{spawner:?}").contains("group_alive: false"));
}

#[test]
fn members_borrow_local_data() {
    let mut results = vec![0; 5];
    {
        let mut group = Group::default();
        for (i, slot) in results.iter_mut().enumerate() {
            group.spawn(async move {
                YieldNow::default().await;
                *slot = i * i;
                Ok(())
            });
        }
        block_on(group.wait()).unwrap();
    }
    assert_eq!(results, [0, 1, 4, 9, 16]);
}

fn fan_out<'a>(spawner: Spawner<'a>, depth: u32, count: &'a AtomicUsize) {
    let inner = spawner.clone();
    spawner.spawn(async move {
        count.fetch_add(1, Ordering::SeqCst);
        if depth > 0 {
            fan_out(inner.clone(), depth - 1, count);
            fan_out(inner, depth - 1, count);
        }
        Ok(())
    });
}

#[test]
fn members_add_members_through_a_spawner() {
    let count = AtomicUsize::new(0);
    let mut group = Group::default();
    group.set_limit(2);
    fan_out(group.spawner(), 4, &count);
    block_on(group.wait()).unwrap();
    drop(group);
    assert_eq!(count.load(Ordering::SeqCst), 31);
}

#[test]
fn spawning_from_another_thread_wakes_the_driver() {
    let mut group = Group::default();
    let spawner = group.spawner();
    let (tx, rx) = oneshot::channel::<()>();
    group.spawn(async move { rx.await.map_err(Cause::new) });
    let helper = std::thread::spawn(move || {
        spawner.spawn(async { Err(Cause::msg("from a thread")) });
        tx.send(()).unwrap();
    });
    let err = block_on(group.wait()).unwrap_err();
    helper.join().unwrap();
    assert_eq!(err.to_string(), "from a thread");
}

#[test]
fn parent_cancellation_reaches_the_members() {
    let (parent, guard) = Context::background().with_cancel();
    let mut group = Group::new(&parent);
    for _ in 0..3 {
        let ctx = group.context().clone();
        group.spawn(async move { Err(ctx.done().await.into()) });
    }
    std::thread::spawn(move || guard.cancel_with_cause(Cause::msg("shutdown")));
    let err = block_on(group.wait()).unwrap_err();
    assert_eq!(err.downcast_ref::<Error>(), Some(&Error::Canceled));
    assert_eq!(group.context().cause().unwrap().to_string(), "shutdown");
}

#[test]
fn debug_output_names_the_state() {
    let group = Group::default();
    group.set_limit(1);
    group.spawn(async { Ok(()) });
    group.spawn(async { Ok(()) });
    let text = format!("{group:?}");
    assert!(
        text.contains("limit: Some(1)") && text.contains("admitted: 1"),
        "{text}"
    );
    assert!(text.contains("queued: 1"), "{text}");
}

// ------------------------------------------------------------- thread scopes

#[test]
fn scope_first_error_wins_and_cancels_the_context_with_that_cause() {
    let mut ctx = None;
    let result = Group::scope(&Context::background(), |s| {
        ctx = Some(s.context().clone());
        s.spawn(|ctx| {
            ctx.wait_done();
            Err(Boom("second").into())
        });
        s.spawn(|_| Err(Boom("first").into()));
        "value"
    });
    assert_eq!(boom(&result.unwrap_err()), Some("first"));
    assert_eq!(boom(&ctx.unwrap().cause().unwrap()), Some("first"));
}

#[test]
fn scope_returns_the_body_value_and_waits_for_every_member() {
    let finished = AtomicUsize::new(0);
    let mut ctx = None;
    let result = Group::scope(&Context::background(), |s| {
        ctx = Some(s.context().clone());
        for _ in 0..4 {
            s.spawn(|ctx| {
                ctx.sleep_blocking(Duration::from_millis(10)).unwrap();
                finished.fetch_add(1, Ordering::SeqCst);
                Ok(())
            });
        }
        42
    });
    assert_eq!(result.unwrap(), 42);
    assert_eq!(finished.load(Ordering::SeqCst), 4);
    assert_eq!(ctx.unwrap().err(), Some(Error::Canceled));
    assert_eq!(Group::scope(&Context::background(), |_| ()).ok(), Some(()));
}

#[test]
fn scope_waits_for_every_member_even_after_a_failure() {
    let finished = AtomicBool::new(false);
    let result = Group::scope(&Context::background(), |s| {
        s.spawn(|ctx| {
            assert_eq!(ctx.wait_done(), Error::Canceled);
            std::thread::sleep(Duration::from_millis(20));
            finished.store(true, Ordering::SeqCst);
            Ok(())
        });
        s.spawn(|_| Err(Cause::msg("failed")));
    });
    assert_eq!(result.unwrap_err().to_string(), "failed");
    assert!(finished.load(Ordering::SeqCst));
}

#[test]
fn scope_limit_is_respected() {
    let gauge = Gauge::default();
    Group::scope(&Context::background(), |s| {
        s.set_limit(4);
        for _ in 0..40 {
            s.spawn(|_| {
                gauge.enter();
                std::thread::sleep(Duration::from_millis(1));
                gauge.leave();
                Ok(())
            });
        }
    })
    .unwrap();
    assert!((1..=4).contains(&gauge.max()), "max {}", gauge.max());
}

#[test]
fn scope_try_spawn_refuses_when_full_and_accepts_after_a_member_finishes() {
    Group::scope(&Context::background(), |s| {
        s.set_limit(1);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        assert!(
            s.try_spawn(move |_| rx.recv_timeout(PATIENCE).map_err(Cause::new))
                .is_ok()
        );
        let mut member = Some(s.try_spawn(|_| Ok(())).unwrap_err());
        tx.send(()).unwrap();
        eventually("a free place", || {
            match s.try_spawn(member.take().unwrap()) {
                Ok(()) => true,
                Err(back) => {
                    member = Some(back);
                    false
                }
            }
        });
    })
    .unwrap();
}

#[test]
fn scope_member_panic_cancels_and_resumes_after_the_others() {
    let finished = AtomicBool::new(false);
    let seen = Mutex::new(None);
    let payload = catch_unwind(AssertUnwindSafe(|| {
        Group::scope(&Context::background(), |s| {
            s.spawn(|ctx| {
                ctx.wait_done();
                *seen.lock().unwrap() = ctx.cause().map(|c| c.to_string());
                std::thread::sleep(Duration::from_millis(10));
                finished.store(true, Ordering::SeqCst);
                Ok(())
            });
            s.spawn(|_| panic!("thread kaboom"));
        })
    }))
    .unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"thread kaboom"));
    assert!(finished.load(Ordering::SeqCst));
    let seen = seen.into_inner().unwrap();
    assert_eq!(
        seen.as_deref(),
        Some("group member panicked: thread kaboom")
    );
}

#[test]
fn scope_body_panic_cancels_the_members() {
    let seen = Mutex::new(None);
    let payload = catch_unwind(AssertUnwindSafe(|| {
        Group::scope(&Context::background(), |s| {
            s.spawn(|ctx| {
                ctx.wait_done();
                *seen.lock().unwrap() = ctx.cause().map(|c| c.to_string());
                Ok(())
            });
            panic!("body bug");
        })
    }))
    .unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"body bug"));
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.as_deref(), Some("group scope body panicked: body bug"));
}

#[test]
fn scope_members_add_members() {
    let count = AtomicUsize::new(0);
    Group::scope(&Context::background(), |s| {
        for _ in 0..3 {
            let inner = s.clone();
            let count = &count;
            s.spawn(move |_| {
                count.fetch_add(1, Ordering::SeqCst);
                inner.spawn(move |_| {
                    count.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                });
                Ok(())
            });
        }
    })
    .unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 6);
}

#[test]
fn scope_wait_mid_scope_then_reuse() {
    let result = Group::scope(&Context::background(), |s| {
        s.spawn(|_| Ok(()));
        assert!(s.wait().is_ok());
        assert!(s.context().is_done(), "wait cancels the group's context");
        s.spawn(|ctx| {
            assert!(ctx.is_done());
            Err(Cause::msg("late"))
        });
        assert_eq!(s.wait().unwrap_err().to_string(), "late");
        assert!(format!("{s:?}").contains("failed: true"));
    });
    assert_eq!(result.unwrap_err().to_string(), "late");
}

#[test]
fn scope_parent_cancellation_reaches_the_members() {
    let (parent, guard) = Context::background().with_cancel();
    let result = Group::scope(&parent, |s| {
        for _ in 0..3 {
            s.spawn(|ctx| Err(ctx.wait_done().into()));
        }
        guard.cancel();
    });
    assert_eq!(
        result.unwrap_err().downcast_ref::<Error>(),
        Some(&Error::Canceled)
    );
}

/// Regression: a resolved `Wait` left its driver's waker in the group, which
/// kept that task (an executor's task, and what it owns) alive until the
/// group was dropped or waited on again.
#[test]
fn regression_a_resolved_wait_lets_go_of_its_drivers_waker() {
    let mut group = Group::new(&Context::background());
    let (tx, rx) = oneshot::channel::<()>();
    group.spawn(async move {
        let _ = rx.await;
        Ok(())
    });
    let (counter, waker) = CountingWaker::new();
    let mut wait = group.wait();
    assert!(poll_once(&mut wait, &waker).is_pending());
    tx.send(()).unwrap();
    assert!(poll_once(&mut wait, &waker).is_ready());
    drop((wait, waker));
    assert_eq!(
        Arc::strong_count(&counter),
        1,
        "the group still holds the driver's waker"
    );
    drop(group);
}
