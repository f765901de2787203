//! A blocked waiter sees its deadline even when the timer thread cannot run.
//!
//! One test on purpose: it blocks the global timer thread, which would delay
//! every other test's deadlines in the same process.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use cancelctx::timer::Timer;
use cancelctx::{Cause, Context, Error};

#[test]
fn blocking_waiters_fire_their_deadline_when_the_timer_thread_is_stuck() {
    // Occupy the timer thread until released: from here on, only waiters can
    // fire deadlines.
    let (release, blocked) = mpsc::channel::<()>();
    let (entered, started) = mpsc::channel();
    let _blocker = Timer::global().schedule(Instant::now(), move || {
        entered.send(()).unwrap();
        let _ = blocked.recv();
    });
    started
        .recv_timeout(Duration::from_secs(10))
        .expect("the timer thread took the blocker");

    // Its own deadline, with a cause.
    let (ctx, _g) =
        Context::background().with_timeout_cause(Duration::from_millis(5), Cause::msg("slow"));
    let deadline = ctx.deadline().unwrap();
    let (tx, rx) = mpsc::channel();
    let waiter = {
        let ctx = ctx.clone();
        std::thread::spawn(move || tx.send(ctx.wait_done()).unwrap())
    };
    let seen = rx.recv_timeout(Duration::from_secs(10));
    assert_eq!(
        seen,
        Ok(Error::DeadlineExceeded),
        "wait_done never saw its deadline"
    );
    waiter.join().unwrap();
    assert!(Instant::now() >= deadline, "fired early");
    assert_eq!(ctx.cause().unwrap().to_string(), "slow");

    // An inherited deadline: the waiter fires the ancestor, which cancels its
    // whole subtree.
    let (parent, _gp) = Context::background().with_timeout(Duration::from_millis(5));
    let (child, _gc) = parent.with_value(1u8).with_cancel();
    let (sibling, _gs) = parent.with_cancel();
    assert_eq!(
        child.wait_done_timeout(Duration::from_secs(10)),
        Some(Error::DeadlineExceeded)
    );
    assert!(parent.is_done() && sibling.is_done());

    // `wait_done_deadline` and `sleep_blocking` too.
    let (ctx, _g) = Context::background().with_timeout(Duration::from_millis(5));
    assert_eq!(
        ctx.sleep_blocking(Duration::from_secs(10)),
        Err(Error::DeadlineExceeded)
    );

    release.send(()).unwrap();
}
