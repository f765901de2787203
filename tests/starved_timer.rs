//! Deadlines are seen even when the timer thread cannot run: a blocked
//! waiter, and a thread that checks its context, fire them themselves.
//!
//! One test on purpose: it blocks the global timer thread, which would delay
//! every other test's deadlines in the same process.

use std::future::Future;
use std::pin::pin;
use std::sync::mpsc;
use std::task::{Context as TaskContext, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use cancelctx::timer::Timer;
use cancelctx::{Cause, Context, Error};

/// How long a check may take to see a deadline the timer thread cannot fire:
/// generous, for a loaded machine. Without self-expiry it would never come.
const PATIENCE: Duration = Duration::from_secs(10);

#[test]
fn deadlines_fire_when_the_timer_thread_is_stuck() {
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

    blocking_waiters_fire_their_deadline();
    observers_fire_their_deadline();
    an_async_sleep_sees_the_deadline_before_its_end();
    a_loop_checking_two_contexts_sees_each_deadline();

    release.send(()).unwrap();
}

fn blocking_waiters_fire_their_deadline() {
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

    // A timed wait that begins after the deadline, its own limit reached at
    // once, ends the context too (it has read the clock).
    let (ctx, _g) = Context::background().with_timeout(Duration::from_millis(5));
    sleep_past_deadline(&ctx);
    assert_eq!(
        ctx.wait_done_timeout(Duration::ZERO),
        Some(Error::DeadlineExceeded)
    );
    let (ctx, _g) = Context::background().with_timeout(Duration::from_millis(5));
    sleep_past_deadline(&ctx);
    assert_eq!(
        ctx.wait_done_deadline(ctx.deadline().unwrap()),
        Some(Error::DeadlineExceeded)
    );
}

/// Sleeps past `ctx`'s deadline and checks that nobody has fired it yet
/// (`Debug` shows the state without ending the context).
fn sleep_past_deadline(ctx: &Context) {
    let deadline = ctx.deadline().unwrap();
    while Instant::now() <= deadline {
        thread::sleep(Duration::from_millis(1));
    }
    assert!(
        format!("{ctx:?}").contains("err: None"),
        "fired while the timer thread was stuck, before any check: {ctx:?}"
    );
}

fn observers_fire_their_deadline() {
    // A loop polling `is_done()`: it sees the deadline, not before, with
    // the cause, and `after_func` callbacks run.
    let (ctx, _g) =
        Context::background().with_timeout_cause(Duration::from_millis(5), Cause::msg("spun"));
    let deadline = ctx.deadline().unwrap();
    let (ran, callback_ran) = mpsc::channel();
    let _reg = ctx.after_func(move || ran.send(()).unwrap());
    let start = Instant::now();
    while !ctx.is_done() {
        assert!(
            start.elapsed() < PATIENCE,
            "is_done() never saw its deadline"
        );
        std::hint::spin_loop();
    }
    assert!(Instant::now() >= deadline, "is_done() flipped early");
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert_eq!(ctx.cause().unwrap().to_string(), "spun");
    // (On the callback pool, not on this thread.)
    assert_eq!(
        callback_ran.recv_timeout(PATIENCE),
        Ok(()),
        "after_func did not run"
    );

    // At most 16 checks (one clock read each 16 per thread) once it passed;
    // an inherited deadline fires the ancestor that owns it, with its cause.
    let (parent, _gp) =
        Context::background().with_timeout_cause(Duration::from_millis(5), Cause::msg("parent"));
    let (child, _gc) = parent.with_value(1u8).with_cancel();
    let (sibling, _gs) = parent.with_cancel();
    sleep_past_deadline(&child);
    let checks = (1..=16).find(|_| child.is_done());
    assert!(checks.is_some(), "16 checks after the deadline, still live");
    assert_eq!(child.cause().unwrap().to_string(), "parent");
    assert_eq!(parent.err(), Some(Error::DeadlineExceeded));
    assert_eq!(
        sibling.wait_done_timeout(Duration::ZERO),
        Some(Error::DeadlineExceeded)
    );

    // `cause()` alone.
    let (ctx, _g) =
        Context::background().with_timeout_cause(Duration::from_millis(5), Cause::msg("asked"));
    sleep_past_deadline(&ctx);
    let cause = (1..=16).find_map(|_| ctx.cause());
    assert_eq!(cause.map(|c| c.to_string()).as_deref(), Some("asked"));

    // `remaining()` at zero means done, on the first call.
    let (ctx, _g) = Context::background().with_timeout(Duration::from_millis(5));
    sleep_past_deadline(&ctx);
    assert_eq!(ctx.remaining(), Some(Duration::ZERO));
    assert_eq!(
        ctx.wait_done_timeout(Duration::ZERO),
        Some(Error::DeadlineExceeded)
    );

    // A `Done` future polled again and again (as in a busy `select!` loop).
    let (ctx, _g) = Context::background().with_timeout(Duration::from_millis(5));
    let mut done = pin!(ctx.done());
    let mut cx = TaskContext::from_waker(Waker::noop());
    assert_eq!(done.as_mut().poll(&mut cx), Poll::Pending);
    sleep_past_deadline(&ctx);
    let polled = (1..=16).find_map(|_| match done.as_mut().poll(&mut cx) {
        Poll::Ready(err) => Some(err),
        Poll::Pending => None,
    });
    assert_eq!(polled, Some(Error::DeadlineExceeded));

    // Two threads spinning on one context: one fires, both see it.
    let (ctx, _g) = Context::background().with_timeout(Duration::from_millis(5));
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let ctx = ctx.clone();
            thread::spawn(move || {
                let start = Instant::now();
                while !ctx.is_done() {
                    assert!(start.elapsed() < PATIENCE, "a spinner never saw it");
                    std::hint::spin_loop();
                }
                ctx.err()
            })
        })
        .collect();
    for s in spinners {
        assert_eq!(s.join().unwrap(), Some(Error::DeadlineExceeded));
    }
}

/// An async `ctx.sleep` polled once both the context's deadline and, later,
/// the sleep's own end have passed: the context's end wins, as it does for
/// `sleep_blocking`. Polled on a thread whose last clock reading (its one
/// clock-reading check, on another context) was taken before the deadline,
/// so the `Done` inside the sleep does not see the deadline passed: the
/// sleep's own look is what is tested.
fn an_async_sleep_sees_the_deadline_before_its_end() {
    let (ctx, _g) = Context::background().with_timeout(Duration::from_millis(5));
    let sleep = ctx.sleep(Duration::from_millis(10));
    let (checked_tx, checked) = mpsc::channel();
    let (go, go_rx) = mpsc::channel::<()>();
    let poller = thread::spawn(move || {
        let (other, _g) = Context::background().with_timeout(Duration::from_secs(3600));
        assert!(!other.is_done());
        checked_tx.send(()).unwrap();
        go_rx.recv().unwrap();
        let mut sleep = pin!(sleep);
        match sleep
            .as_mut()
            .poll(&mut TaskContext::from_waker(Waker::noop()))
        {
            Poll::Ready(result) => result,
            Poll::Pending => panic!("a sleep whose end has passed is pending"),
        }
    });
    checked.recv().unwrap();
    sleep_past_deadline(&ctx);
    thread::sleep(Duration::from_millis(10));
    go.send(()).unwrap();
    let result = poller.join().unwrap();
    assert_eq!(result, Err(Error::DeadlineExceeded));
}

/// Regression. lib.rs: "A CPU-bound loop that checks `is_done()` sees its deadline
/// within 16 iterations, even when every core is busy and the timer thread
/// cannot run." A loop that checks two contexts with deadlines per
/// iteration (a request's own and a longer one, say) never sees the short
/// one: the per-thread count makes every 16th check read the clock, and
/// with an even number of contexts per iteration that is always the same
/// context. Every check now compares with the thread's latest reading.
fn a_loop_checking_two_contexts_sees_each_deadline() {
    let seen = thread::spawn(|| {
        let (long, _gl) = Context::background().with_timeout(Duration::from_secs(3600));
        let (short, _gs) = Context::background().with_timeout(Duration::from_millis(5));
        let deadline = short.deadline().unwrap();
        let start = Instant::now();
        let mut iterations = 0u64;
        loop {
            let a = long.is_done();
            let b = short.is_done();
            assert!(!a);
            if b {
                assert!(Instant::now() >= deadline, "fired early");
                return Ok(iterations);
            }
            iterations += 1;
            if start.elapsed() > PATIENCE {
                return Err(format!(
                    "{iterations} iterations, {:?} past the deadline, still live: {short:?}",
                    Instant::now() - deadline
                ));
            }
        }
    })
    .join()
    .unwrap();
    seen.expect("the short deadline was never seen by the loop");
}
