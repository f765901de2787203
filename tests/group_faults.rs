//! Group members whose end, or whose user code, misbehaves: a foreign waker
//! on the group's context that panics when a failure cancels it, a panic
//! payload, an error or a member whose `Drop` panics (or blocks), members
//! dropped together whose `Drop`s panic. The group's bookkeeping must
//! survive all of them: later calls return (nothing hangs), the first error
//! or panic is the one reported, the other members run to their end, and a
//! dropped `Wait` drops its members. (Observed before the fixes:
//! `GroupScope::wait` and a limited `spawn` hung, `Group::wait` lost the
//! first error, a `Drop`'s panic escaped `Wait::poll` taking the other
//! members with it, two panicking member `Drop`s aborted the process, and a
//! scope dropped a later error under its state lock.)
//!
//! The `stress_*` tests then drive admission (limits, the queue,
//! `try_spawn`, spawners on other threads) under several executors and check
//! only safety: never more members running than the limit, every accepted
//! member runs exactly once, every wait ends. `GROUP_STRESS_ROUNDS` raises
//! their rounds (default 200).

mod common;

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, panic_any};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use cancelctx::{Cause, Context, Error, Group};
use common::{CountingWaker, DropFlag, Gauge, PATIENCE, YieldNow, poll_once};
use futures::executor::block_on;

struct PanickingWaker;
impl Wake for PanickingWaker {
    fn wake(self: Arc<Self>) {
        panic!("waker panics");
    }
}

struct PayloadPanicsOnDrop;
impl Drop for PayloadPanicsOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("payload drop panics");
        }
    }
}

/// Registers a waker that panics when `ctx` ends; keep the returned `Done`.
fn panicking_waiter(ctx: &Context) -> cancelctx::Done {
    let mut done = ctx.done();
    let waker = Waker::from(Arc::new(PanickingWaker));
    assert!(
        Pin::new(&mut done)
            .poll(&mut TaskContext::from_waker(&waker))
            .is_pending()
    );
    done
}

/// Runs `f` on a thread; `None` if it has not finished within `limit`
/// (the thread is then left behind, hung).
fn finishes_within<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<std::thread::Result<T>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = catch_unwind(AssertUnwindSafe(f));
        let _ = tx.send(r);
    });
    rx.recv_timeout(limit).ok()
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string payload>".to_owned()
    }
}

/// An error whose `Drop` panics (unless already unwinding).
#[derive(Debug)]
struct ErrorPanicsOnDrop;
impl std::fmt::Display for ErrorPanicsOnDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an error whose drop panics")
    }
}
impl std::error::Error for ErrorPanicsOnDrop {}
impl Drop for ErrorPanicsOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("error drop panics");
        }
    }
}

/// A member future (written by hand, not an `async` block) whose `Drop`
/// panics: ready at once with `Ok(())`, or pending forever.
struct MemberPanicsOnDrop {
    ready: bool,
}
impl Future for MemberPanicsOnDrop {
    type Output = Result<(), Cause>;
    fn poll(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        if self.ready {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}
impl Drop for MemberPanicsOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("member drop panics");
        }
    }
}

/// A pending member whose `Drop` always panics (even while unwinding), like
/// `tests/faults.rs`'s `PanicOnDrop`.
struct MemberAlwaysPanicsOnDrop;
impl Future for MemberAlwaysPanicsOnDrop {
    type Output = Result<(), Cause>;
    fn poll(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        Poll::Pending
    }
}
impl Drop for MemberAlwaysPanicsOnDrop {
    fn drop(&mut self) {
        panic!("member drop panics");
    }
}

/// Runs `f` on a thread; panics if it has not finished within `PATIENCE`.
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    match finishes_within(PATIENCE, f) {
        Some(Ok(v)) => v,
        Some(Err(payload)) => std::panic::resume_unwind(payload),
        None => panic!("{what}: did not finish within {PATIENCE:?} (hung)"),
    }
}

#[test]
fn regression_scope_wait_after_a_failure_that_woke_a_panicking_waker_returns() {
    let outcome = finishes_within(Duration::from_secs(5), || {
        Group::scope(&Context::background(), |s| {
            let _done = panicking_waiter(s.context());
            s.spawn(|_ctx| Err(Cause::msg("member failed")));
            // Go: Wait returns once every member has returned.
            s.wait()
        })
    });
    assert!(
        outcome.is_some(),
        "GroupScope::wait hung: the member's `finish` panicked in cancel_with_cause \
         before `release`, so `active` never went back to 0"
    );
}

#[test]
fn regression_scope_limited_spawn_after_a_failure_that_woke_a_panicking_waker_returns() {
    let outcome = finishes_within(Duration::from_secs(5), || {
        Group::scope(&Context::background(), |s| {
            s.set_limit(1);
            let _done = panicking_waiter(s.context());
            s.spawn(|_ctx| Err(Cause::msg("member failed")));
            // The first member has ended: its place must be free again.
            s.spawn(|_ctx| Ok(()));
        })
    });
    assert!(
        outcome.is_some(),
        "GroupScope::spawn under a limit hung: the failed member never released its place"
    );
}

#[test]
fn regression_scope_wait_after_a_second_panic_whose_payload_drop_panics_returns() {
    let outcome = finishes_within(Duration::from_secs(5), || {
        Group::scope(&Context::background(), |s| {
            s.spawn(|_ctx| panic!("first member panic"));
            s.spawn(|ctx| {
                ctx.wait_done(); // after the first panic was recorded
                panic_any(PayloadPanicsOnDrop)
            });
            s.wait()
        })
    });
    assert!(
        outcome.is_some(),
        "GroupScope::wait hung: dropping the second panic payload panicked inside \
         `finish`, before `release`"
    );
}

#[test]
fn regression_group_wait_keeps_the_first_error_when_the_cancel_it_triggers_panics() {
    let mut group = Group::new(&Context::background());
    let _done = panicking_waiter(group.context());
    group.spawn(async { Err(Cause::msg("first")) });
    let first = catch_unwind(AssertUnwindSafe(|| {
        futures::executor::block_on(group.wait())
    }));
    // The waker's panic reaches the waiter: acceptable (propagated).
    assert!(first.is_err());
    // The member did fail, and the context's cause says so ...
    assert_eq!(group.context().cause().unwrap().to_string(), "first");
    // ... so Wait must return that error ("its first error is kept").
    let again = futures::executor::block_on(group.wait());
    assert_eq!(
        again.map_err(|e| e.to_string()),
        Err("first".to_owned()),
        "the first error was lost: `record` sets `first_err` only after the cancel returns"
    );
}

// ------------------------------------------------- async group: panics in Drop

/// `Group` docs: "A member that panics is caught: ... the other members keep
/// running until they finish, and then `Wait` resumes the first panic with
/// its original payload". Here the first member panics, a second one panics
/// later with a payload whose `Drop` panics. `record` drops that second
/// payload (`Option::get_or_insert`) inside `Wait::poll`, before the
/// member's place is released: the payload's panic escapes `Wait::poll`,
/// the `Wait` is dropped by the unwinding and takes the third member (still
/// cleaning up after the cancel) with it, and the waiter sees the wrong
/// panic.
#[test]
fn regression_async_second_panic_payload_whose_drop_panics_is_contained() {
    let cleaned_up = Arc::new(AtomicBool::new(false));
    let flag = cleaned_up.clone();
    let caught = within("wait", move || {
        let mut group = Group::new(&Context::background());
        group.spawn(async { panic!("first member panic") });
        let ctx = group.context().clone();
        group.spawn(async move {
            ctx.done().await;
            panic_any(PayloadPanicsOnDrop)
        });
        let ctx = group.context().clone();
        group.spawn(async move {
            ctx.done().await;
            for _ in 0..3 {
                YieldNow::default().await; // some cleanup after the cancel
            }
            flag.store(true, Ordering::SeqCst);
            Ok(())
        });
        let caught = catch_unwind(AssertUnwindSafe(|| block_on(group.wait())));
        let cause = group.context().cause().unwrap().to_string();
        (caught.map_err(|p| panic_message(&*p)).err(), cause)
    });
    assert_eq!(
        caught.0.as_deref(),
        Some("first member panic"),
        "Wait must resume the first panic's payload"
    );
    assert_eq!(caught.1, "group member panicked: first member panic");
    assert!(
        cleaned_up.load(Ordering::SeqCst),
        "the third member was dropped mid-flight instead of running to its end"
    );
}

/// Same shape with errors: "later errors are dropped" — `record` drops a
/// later member's error inside `Wait::poll`, before the member's place is
/// released and outside any `catch_unwind`. When that error's `Drop`
/// panics, the panic escapes `Wait::poll`: the remaining member is dropped
/// mid-flight. (Expected: the panic is caught as the member's panic, the
/// others run to their end, and `Wait` resumes it.)
#[test]
fn regression_async_later_error_whose_drop_panics_is_contained() {
    let cleaned_up = Arc::new(AtomicBool::new(false));
    let flag = cleaned_up.clone();
    let (caught, cause) = within("wait", move || {
        let mut group = Group::new(&Context::background());
        group.spawn(async { Err(Cause::msg("first")) });
        let ctx = group.context().clone();
        group.spawn(async move {
            ctx.done().await;
            Err(Cause::new(ErrorPanicsOnDrop))
        });
        let ctx = group.context().clone();
        group.spawn(async move {
            ctx.done().await;
            for _ in 0..3 {
                YieldNow::default().await;
            }
            flag.store(true, Ordering::SeqCst);
            Ok(())
        });
        let caught = catch_unwind(AssertUnwindSafe(|| block_on(group.wait())));
        let cause = group.context().cause().unwrap().to_string();
        (
            caught
                .map(|r| r.map_err(|e| e.to_string()))
                .map_err(|p| panic_message(&*p)),
            cause,
        )
    });
    assert_eq!(cause, "first");
    assert!(
        cleaned_up.load(Ordering::SeqCst),
        "the last member was dropped mid-flight (result of wait: {caught:?})"
    );
    // A panic takes precedence over an error.
    assert_eq!(caught, Err("error drop panics".to_owned()));
}

/// A member future whose own `Drop` panics once it has completed: the scope
/// group catches this (the member closure is consumed inside its
/// `catch_unwind`), but `Slots::poll` drops the finished member outside
/// `catch_unwind`, so the panic escapes `Wait::poll` with the member's place
/// still taken. The other member is dropped mid-flight and the context's
/// cause is a bare `Canceled` instead of the documented
/// "group member panicked: ...".
#[test]
fn regression_async_member_whose_drop_panics_after_completing_is_a_member_panic() {
    let cleaned_up = Arc::new(AtomicBool::new(false));
    let flag = cleaned_up.clone();
    let (caught, cause) = within("wait", move || {
        let mut group = Group::new(&Context::background());
        group.spawn(MemberPanicsOnDrop { ready: true });
        let ctx = group.context().clone();
        group.spawn(async move {
            ctx.done().await;
            YieldNow::default().await;
            flag.store(true, Ordering::SeqCst);
            Ok(())
        });
        let caught = catch_unwind(AssertUnwindSafe(|| block_on(group.wait())));
        let cause = group.context().cause().unwrap().to_string();
        (caught.map_err(|p| panic_message(&*p)).err(), cause)
    });
    assert_eq!(cause, "group member panicked: member drop panics");
    assert_eq!(caught.as_deref(), Some("member drop panics"));
    assert!(
        cleaned_up.load(Ordering::SeqCst),
        "the other member was dropped mid-flight instead of running to its end"
    );
}

/// When the escaping panic of the previous test is caught around a single
/// poll (the `Wait` kept and polled again), the member's admission place is
/// never released: `active` stays 1 with no member left, and `Wait` pends
/// forever.
#[test]
fn regression_async_wait_polled_again_after_a_member_drop_panic_completes() {
    use futures::future::FusedFuture;
    let mut group = Group::new(&Context::background());
    group.spawn(MemberPanicsOnDrop { ready: true });
    let (_counter, waker) = CountingWaker::new();
    let mut wait = group.wait();
    let mut polls = Vec::new();
    for _ in 0..10 {
        if wait.is_terminated() {
            break;
        }
        let r = catch_unwind(AssertUnwindSafe(|| poll_once(&mut wait, &waker)));
        polls.push(match r {
            Ok(Poll::Pending) => "pending".to_owned(),
            Ok(Poll::Ready(r)) => format!("ready {r:?}"),
            Err(p) => format!("panic {:?}", panic_message(&*p)),
        });
    }
    assert!(
        wait.is_terminated(),
        "Wait never completes with no member left; polls: {polls:?}; {wait:?}"
    );
}

/// `Wait` docs: "dropping a `Wait` before it resolves drops every member
/// still running or queued, in place, and cancels the group's context".
/// `abort` cancels first; when that cancel resumes a waiter's panic (a
/// foreign waker on the group's context), nothing is dropped nor taken
/// out: the members survive the dropped `Wait` and run on the next `wait`.
#[test]
fn regression_dropping_wait_drops_the_members_even_when_the_cancel_panics() {
    let running_dropped = Arc::new(AtomicBool::new(false));
    let queued_dropped = Arc::new(AtomicBool::new(false));
    let queued_ran = Arc::new(AtomicBool::new(false));
    let mut group = Group::new(&Context::background());
    group.set_limit(1);
    let _done = panicking_waiter(group.context());
    let flag = DropFlag(running_dropped.clone());
    let ctx = group.context().clone();
    group.spawn(async move {
        let _flag = flag;
        ctx.done().await;
        Ok(())
    });
    let flag = DropFlag(queued_dropped.clone());
    let ran = queued_ran.clone();
    group.spawn(async move {
        let _flag = flag;
        ran.store(true, Ordering::SeqCst);
        Ok(())
    });
    let (_counter, waker) = CountingWaker::new();
    let mut wait = group.wait();
    assert!(poll_once(&mut wait, &waker).is_pending());
    let dropped = catch_unwind(AssertUnwindSafe(|| drop(wait)));
    assert!(dropped.is_err(), "the waker's panic is propagated");
    assert!(
        running_dropped.load(Ordering::SeqCst),
        "the running member outlived the dropped Wait"
    );
    assert!(
        queued_dropped.load(Ordering::SeqCst),
        "the queued member outlived the dropped Wait"
    );
    block_on(group.wait()).unwrap();
    assert!(
        !queued_ran.load(Ordering::SeqCst),
        "a member of the dropped Wait ran on the next wait"
    );
}

const CHILD: &str = "CANCELCTX_GROUP_FAULTS_CHILD";

/// The child half of the next test: drops a group (and a `Wait`) holding two
/// pending members whose `Drop` panics.
#[test]
#[ignore = "run by regression_two_member_drops_that_panic_do_not_abort_the_process"]
fn child_two_panicking_member_drops() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    std::panic::set_hook(Box::new(|_| {}));
    // Dropping the Wait (a select's losing branch, a timeout).
    let mut group = Group::new(&Context::background());
    group.spawn(MemberAlwaysPanicsOnDrop);
    group.spawn(MemberAlwaysPanicsOnDrop);
    let (_counter, waker) = CountingWaker::new();
    let mut wait = group.wait();
    assert!(poll_once(&mut wait, &waker).is_pending());
    let r = catch_unwind(AssertUnwindSafe(|| drop(wait)));
    assert!(r.is_err());
    // Dropping the group with both queued.
    let group = Group::new(&Context::background());
    group.spawn(MemberAlwaysPanicsOnDrop);
    group.spawn(MemberAlwaysPanicsOnDrop);
    let r = catch_unwind(AssertUnwindSafe(|| drop(group)));
    assert!(r.is_err());
    println!("child survived");
}

/// Two members whose `Drop` panics, dropped together (a `Wait` dropped
/// before it resolved, or the group dropped): `abort` drops them as one
/// `Vec`, so the second panic happens during the first one's unwinding and
/// the process aborts (SIGABRT). The crate contains exactly this case for
/// values a cancel releases (`tests/faults.rs`,
/// `two_deadline_causes_whose_drop_panics_in_one_walk`).
#[test]
fn regression_two_member_drops_that_panic_do_not_abort_the_process() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_two_panicking_member_drops",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("child survived"),
        "child process died: {:?}\nstderr tail: {}",
        out.status,
        stderr.lines().rev().take(6).collect::<Vec<_>>().join(" | ")
    );
}

// ----------------------------------------------- scope group: user code under the lock

/// scope.rs's lock order: "the state lock is never held while ... running or
/// dropping user code". `Shared::finish` drops a later member's error
/// (`first_failure.then_some(err)`) while holding the state lock. An error
/// whose `Drop` waits for another member that must touch the group (here a
/// `try_spawn`) deadlocks; the test bounds the wait and reports it.
#[test]
fn regression_scope_later_error_is_not_dropped_under_the_state_lock() {
    /// Its `Drop` tells the test it has begun, then waits (bounded) for the
    /// other member to get through `try_spawn`.
    #[derive(Debug)]
    struct WaitsInDrop {
        started: mpsc::SyncSender<()>,
        proceed: Arc<Mutex<mpsc::Receiver<()>>>,
        got_through: Arc<AtomicBool>,
    }
    impl std::fmt::Display for WaitsInDrop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("later error")
        }
    }
    impl std::error::Error for WaitsInDrop {}
    impl Drop for WaitsInDrop {
        fn drop(&mut self) {
            let _ = self.started.send(());
            let ok = self
                .proceed
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(5))
                .is_ok();
            self.got_through.store(ok, Ordering::SeqCst);
        }
    }

    let got_through = Arc::new(AtomicBool::new(false));
    let flag = got_through.clone();
    let result = within("scope", move || {
        let (started_tx, started_rx) = mpsc::sync_channel::<()>(1);
        let (proceed_tx, proceed_rx) = mpsc::channel::<()>();
        let proceed_rx = Arc::new(Mutex::new(proceed_rx));
        Group::scope(&Context::background(), |s| {
            s.spawn(|_ctx| Err(Cause::msg("first")));
            s.spawn(move |ctx| {
                ctx.wait_done(); // after the first failure
                Err(Cause::new(WaitsInDrop {
                    started: started_tx,
                    proceed: proceed_rx,
                    got_through: flag,
                }))
            });
            let s2 = s.clone();
            s.spawn(move |_ctx| {
                // Wait until the later error is being dropped, then touch
                // the group and let the drop finish.
                started_rx.recv().unwrap();
                let _ = s2.try_spawn(|_ctx| Ok(()));
                let _ = proceed_tx.send(());
                Ok(())
            });
        })
        .map_err(|e| e.to_string())
    });
    assert_eq!(result, Err("first".to_owned()));
    assert!(
        got_through.load(Ordering::SeqCst),
        "try_spawn blocked while the later error's Drop ran under the state lock \
         (a deadlock, cut short by the Drop's 5 s bound)"
    );
}

/// A later member error whose `Drop` panics, in a scope: `finish` drops it
/// outside its `catch_unwind` (under the state lock), so the member thread
/// itself panics and `Group::scope` panics with std's generic "a scoped
/// thread panicked" instead of the member's payload (the async group and the
/// docs: the first member panic is resumed once every member has finished).
#[test]
fn regression_scope_later_error_whose_drop_panics_is_a_member_panic() {
    let caught = within("scope", || {
        catch_unwind(AssertUnwindSafe(|| {
            Group::scope(&Context::background(), |s| {
                s.spawn(|_ctx| Err(Cause::msg("first")));
                s.spawn(|ctx| {
                    ctx.wait_done();
                    Err(Cause::new(ErrorPanicsOnDrop))
                });
            })
        }))
        .map(|r| r.map_err(|e| e.to_string()))
        .map_err(|p| panic_message(&*p))
    });
    assert_eq!(caught, Err("error drop panics".to_owned()));
}

// ------------------------------------------------------------ stress

/// One randomized round of an async group: `n` members under `limit`, some
/// spawned from other threads through a `Spawner` (spawn and try_spawn),
/// some woken from other threads, some failing. Checks the gauge never
/// exceeds the limit and every admitted member ran exactly once.
async fn async_round(seed: u64, threads: bool) {
    let mut rng = seed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let limit = 1 + (next() % 4) as usize;
    let n = 8 + (next() % 24) as usize;
    let gauge = Arc::new(Gauge::default());
    let ran = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let mut group: Group<'static> = Group::new(&Context::background());
    group.set_limit(limit);
    let fail_at = (next() % (2 * n as u64)) as usize; // often none
    let member = |i: usize, kind: u64, gauge: Arc<Gauge>, ran: Arc<AtomicUsize>| async move {
        gauge.enter();
        match kind % 4 {
            0 => YieldNow::default().await,
            3 => {
                // Many wakes from another thread, racing the polls.
                use futures::StreamExt;
                let (mut tx, mut rx) = futures::channel::mpsc::channel::<u32>(1);
                std::thread::spawn(move || {
                    for i in 0..20 {
                        if futures::executor::block_on(futures::SinkExt::send(&mut tx, i)).is_err()
                        {
                            break;
                        }
                    }
                });
                let mut got = 0;
                while rx.next().await.is_some() {
                    got += 1;
                }
                assert_eq!(got, 20);
            }
            1 => {
                let (tx, rx) = futures::channel::oneshot::channel::<()>();
                std::thread::spawn(move || {
                    let _ = tx.send(());
                });
                let _ = rx.await;
            }
            _ => {}
        }
        gauge.leave();
        ran.fetch_add(1, Ordering::SeqCst);
        if i == fail_at {
            Err(Cause::msg("fail"))
        } else {
            Ok(())
        }
    };
    let mut helpers = Vec::new();
    for i in 0..n {
        let kind = next();
        let m = member(i, kind, gauge.clone(), ran.clone());
        if threads && kind % 5 == 0 {
            let spawner = group.spawner();
            let accepted = accepted.clone();
            let try_it = kind % 2 == 0;
            helpers.push(std::thread::spawn(move || {
                if try_it {
                    if spawner.try_spawn(m).is_ok() {
                        accepted.fetch_add(1, Ordering::SeqCst);
                    }
                } else {
                    spawner.spawn(m);
                    accepted.fetch_add(1, Ordering::SeqCst);
                }
            }));
        } else if kind % 7 == 0 {
            if group.try_spawn(m).is_ok() {
                accepted.fetch_add(1, Ordering::SeqCst);
            }
        } else {
            group.spawn(m);
            accepted.fetch_add(1, Ordering::SeqCst);
        }
    }
    // Helpers may still be spawning while the group is driven; wait for them
    // from inside a member so `wait` cannot end before they are done.
    let helpers = Arc::new(Mutex::new(helpers));
    let h = helpers.clone();
    let (done_tx, done_rx) = futures::channel::oneshot::channel::<()>();
    std::thread::spawn(move || {
        for t in h.lock().unwrap().drain(..) {
            t.join().unwrap();
        }
        let _ = done_tx.send(());
    });
    group.spawner().spawn(async move {
        let _ = done_rx.await;
        Ok(())
    });
    let _ = group.wait().await;
    // The waiting member counts as one more under the limit, so members
    // admitted meanwhile are still bounded by `limit`.
    assert!(
        gauge.max() <= limit,
        "over-admission: {} > {limit}",
        gauge.max()
    );
    assert_eq!(ran.load(Ordering::SeqCst), accepted.load(Ordering::SeqCst));
    assert!(group.context().is_done());
}

fn rounds() -> u64 {
    std::env::var("GROUP_STRESS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

#[test]
fn stress_async_group_futures_executor() {
    let start = Instant::now();
    for seed in 1..rounds() {
        block_on(async_round(seed * 0x9E37_79B9, seed % 2 == 0));
    }
    assert!(start.elapsed() < 10 * PATIENCE);
}

/// Polls the inner future with a fresh waker (forwarding to the real one)
/// every time: `Wait` must follow its driver's newest waker.
struct NewWakerEachPoll<F>(Pin<Box<F>>);
struct Forward(Waker);
impl Wake for Forward {
    fn wake(self: Arc<Self>) {
        self.0.wake_by_ref();
    }
}
impl<F: Future> Future for NewWakerEachPoll<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let waker = Waker::from(Arc::new(Forward(cx.waker().clone())));
        self.0.as_mut().poll(&mut TaskContext::from_waker(&waker))
    }
}

#[test]
fn stress_async_group_new_waker_each_poll() {
    for seed in 1..rounds() {
        block_on(NewWakerEachPoll(Box::pin(async_round(
            seed * 0x5851_F42D,
            true,
        ))));
    }
}

#[test]
fn stress_async_group_tokio_multi_thread_no_time_driver() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    for seed in 1..rounds() {
        rt.block_on(async {
            tokio::spawn(async_round(seed * 0x2545_F491, true))
                .await
                .unwrap()
        });
    }
}

#[test]
fn stress_async_group_smol() {
    for seed in 1..rounds() {
        smol::block_on(smol::spawn(async_round(seed * 0x1234_5677, seed % 3 != 0)));
    }
}

/// Thread members racing `set_limit` (from members), `spawn` that blocks and
/// `try_spawn`: never more running than the largest limit set, every
/// accepted member runs once, the scope ends.
#[test]
fn stress_scope_set_limit_races_spawn() {
    for round in 0..40usize {
        let gauge = Gauge::default();
        let ran = AtomicUsize::new(0);
        let accepted = AtomicUsize::new(0);
        let max_limit = 1 + round % 3;
        within_scoped(|| {
            Group::scope(&Context::background(), |s| {
                s.set_limit(1);
                for i in 0..12usize {
                    let s2 = s.clone();
                    let member = |_ctx: &Context| {
                        gauge.enter();
                        std::thread::yield_now();
                        gauge.leave();
                        ran.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    };
                    if i % 4 == 3 {
                        if s.try_spawn(member).is_ok() {
                            accepted.fetch_add(1, Ordering::SeqCst);
                        }
                    } else {
                        s.spawn(move |ctx| {
                            s2.set_limit(1 + (i % max_limit));
                            member(ctx)
                        });
                        accepted.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
            .unwrap();
        });
        // The member that set the limit counts itself.
        assert!(gauge.max() <= max_limit);
        assert_eq!(ran.load(Ordering::SeqCst), accepted.load(Ordering::SeqCst));
    }
}

fn within_scoped(f: impl FnOnce() + Send) {
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel();
        scope.spawn(move || {
            f();
            let _ = tx.send(());
        });
        assert!(rx.recv_timeout(PATIENCE).is_ok(), "scope hung");
    });
}

/// Dropping `Wait` mid-flight and waiting again, with spawners on other
/// threads: no member of the dropped wait runs afterwards, and the group
/// always completes its next wait.
#[test]
fn stress_wait_dropped_and_recreated() {
    for round in 0..100u32 {
        let mut group: Group<'static> = Group::new(&Context::background());
        group.set_limit(1 + (round % 3) as usize);
        let spawner = group.spawner();
        let helper = std::thread::spawn(move || {
            for _ in 0..20 {
                spawner.spawn(async {
                    YieldNow::default().await;
                    Ok(())
                });
            }
        });
        for _ in 0..10 {
            let ctx = group.context().clone();
            group.spawn(async move {
                let _ = ctx.done().await;
                Ok(())
            });
        }
        let (_counter, waker) = CountingWaker::new();
        {
            let mut wait = group.wait();
            for _ in 0..(round % 4) {
                let _ = poll_once(&mut wait, &waker);
            }
        } // dropped: the members so far are gone, the context canceled
        helper.join().unwrap();
        assert_eq!(group.context().err(), Some(Error::Canceled));
        within("wait again", move || {
            let mut group = group;
            block_on(group.wait()).unwrap();
        });
    }
}
