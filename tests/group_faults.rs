//! Group members whose end panics a second time: a foreign waker on the
//! group's context that panics when a failure cancels it, or a panic payload
//! whose `Drop` panics. The group's bookkeeping must survive both: later
//! calls return (nothing hangs) and the first error is kept. (Observed
//! before the fixes: `GroupScope::wait` and a limited `spawn` hung, and
//! `Group::wait` lost the first error.)

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, panic_any};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::mpsc;
use std::task::{Context as TaskContext, Wake, Waker};
use std::time::Duration;

use cancelctx::{Cause, Context, Group};

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
