//! The waits under stress and at their edges: `Done`, the blocking waits,
//! `Run`, `Sleep`, `CancelGuard`, `park_toward`. Every test here is bounded
//! by `within` (a hang becomes a failure after `PATIENCE`).

mod common;

use std::sync::Arc;
use std::task::{Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use cancelctx::{Context, Error};
use common::{CountingWaker, PATIENCE, poll_once};

fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = thread::Builder::new()
        .name(what.to_owned())
        .spawn(move || {
            let r = f();
            let _ = tx.send(());
            r
        })
        .unwrap();
    match rx.recv_timeout(PATIENCE) {
        Ok(()) => handle.join().unwrap(),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        },
        Err(_) => panic!("{what}: still running after {PATIENCE:?} (hang)"),
    }
}

// ---------------------------------------------------------------------------
// Blocking waits
// ---------------------------------------------------------------------------

/// Many rounds of a blocking wait racing a cancel from another thread: every
/// wait returns `Some(Canceled)`, never `None`, never hangs.
#[test]
fn blocking_waits_race_cancel() {
    within("blocking_waits_race_cancel", || {
        for i in 0..3000 {
            let (ctx, guard) = Context::background().with_cancel();
            let spin = i % 50;
            let t = thread::spawn(move || {
                for _ in 0..spin {
                    std::hint::spin_loop();
                }
                guard.cancel();
            });
            let got = match i % 3 {
                0 => Some(ctx.wait_done()),
                1 => ctx.wait_done_timeout(PATIENCE),
                _ => ctx.wait_done_deadline(Instant::now() + PATIENCE),
            };
            assert_eq!(got, Some(Error::Canceled), "round {i}");
            t.join().unwrap();
        }
    });
}

/// One thread waits on two contexts in sequence, the first timing out while
/// a cancel races the timeout (so a stale unpark may be pending); the second
/// wait must still see its own cancel and not return early.
#[test]
fn sequential_waits_with_stale_unparks() {
    within("sequential_waits_with_stale_unparks", || {
        for i in 0..500 {
            let (a, ga) = Context::background().with_cancel();
            let (b, gb) = Context::background().with_cancel();
            let t = thread::spawn(move || {
                thread::sleep(Duration::from_micros(50 + (i % 7) * 20));
                ga.cancel();
                thread::sleep(Duration::from_millis(2));
                gb.cancel();
            });
            let first = a.wait_done_timeout(Duration::from_micros(100));
            if first.is_none() {
                // a timed out: fine, but it must not be done unless canceled.
            }
            let start = Instant::now();
            let second = b.wait_done_timeout(PATIENCE);
            assert_eq!(second, Some(Error::Canceled), "round {i}");
            assert!(b.is_done());
            let _ = start;
            t.join().unwrap();
        }
    });
}

#[test]
fn wait_done_deadline_extremes() {
    within("wait_done_deadline_extremes", || {
        let (ctx, guard) = Context::background().with_cancel();
        // Far in the past: a look.
        let past = Instant::now()
            .checked_sub(Duration::from_secs(3600 * 24 * 365))
            .unwrap_or_else(Instant::now);
        assert_eq!(ctx.wait_done_deadline(past), None);
        assert_eq!(ctx.wait_done_timeout(Duration::ZERO), None);
        // Far in the future: woken by the cancel.
        let far = Instant::now() + Duration::from_secs(3600 * 24 * 365 * 100);
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            guard.cancel();
        });
        assert_eq!(ctx.wait_done_deadline(far), Some(Error::Canceled));
        t.join().unwrap();
        // Duration::MAX: waits for the context.
        let (ctx, guard) = Context::background().with_cancel();
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            guard.cancel();
        });
        assert_eq!(ctx.wait_done_timeout(Duration::MAX), Some(Error::Canceled));
        assert_eq!(ctx.sleep_blocking(Duration::MAX), Err(Error::Canceled));
        t.join().unwrap();
        // Roots: a bounded wait returns None, not before its deadline.
        let start = Instant::now();
        assert_eq!(
            Context::background().wait_done_timeout(Duration::from_millis(20)),
            None
        );
        assert!(start.elapsed() >= Duration::from_millis(20));
        assert_eq!(
            Context::background()
                .without_cancel()
                .sleep_blocking(Duration::from_millis(1)),
            Ok(())
        );
    });
}

/// A deadline context waited on with a bound that ends before the deadline,
/// at the deadline, and after it.
#[test]
fn wait_done_timeout_vs_context_deadline() {
    within("wait_done_timeout_vs_context_deadline", || {
        for _ in 0..20 {
            let (ctx, _g) = Context::background().with_timeout(Duration::from_millis(30));
            // Never early means not before the deadline itself, which was
            // set when the context was made (before `start`).
            let deadline = ctx.deadline().unwrap();
            let start = Instant::now();
            assert_eq!(ctx.wait_done_timeout(Duration::from_millis(5)), None);
            assert!(start.elapsed() >= Duration::from_millis(5));
            assert!(!ctx.is_done() || Instant::now() >= deadline);
            assert_eq!(
                ctx.wait_done_timeout(PATIENCE),
                Some(Error::DeadlineExceeded)
            );
            assert!(Instant::now() >= deadline, "ended before its deadline");
        }
        // Child with inherited deadline, through a value link.
        let (p, _g) = Context::background().with_timeout(Duration::from_millis(20));
        let deadline = p.deadline().unwrap();
        let v = p.with_value(5u8);
        let (c, _gc) = v.with_cancel();
        assert_eq!(c.deadline(), Some(deadline));
        assert_eq!(c.wait_done(), Error::DeadlineExceeded);
        assert!(Instant::now() >= deadline, "ended before its deadline");
    });
}

// ---------------------------------------------------------------------------
// Done
// ---------------------------------------------------------------------------

/// A `Done` polled with a new waker each time keeps only the latest one
/// alive (the slab does not grow, replaced wakers are dropped).
#[test]
fn done_with_many_wakers_keeps_one() {
    let (ctx, guard) = Context::background().with_cancel();
    let mut done = ctx.done();
    let mut counters = Vec::new();
    for _ in 0..1000 {
        let (c, w) = CountingWaker::new();
        assert!(poll_once(&mut done, &w).is_pending());
        drop(w);
        counters.push(c);
    }
    // Only the last counter's waker is still held (by the node).
    let held: usize = counters.iter().map(|c| Arc::strong_count(c) - 1).sum();
    assert_eq!(held, 1, "wakers still held by the node");
    guard.cancel();
    let woken: usize = counters.iter().map(|c| c.wakes()).sum();
    assert_eq!(woken, 1);
    assert_eq!(counters.last().unwrap().wakes(), 1);
    let (_c, w) = CountingWaker::new();
    assert_eq!(poll_once(&mut done, &w), Poll::Ready(Error::Canceled));
    // Re-poll after Ready: Ready again, terminated.
    assert_eq!(poll_once(&mut done, &w), Poll::Ready(Error::Canceled));
    assert!(futures::future::FusedFuture::is_terminated(&done));
}

/// Dropping a pending `Done` releases its waker.
#[test]
fn done_dropped_releases_waker() {
    let (ctx, _guard) = Context::background().with_cancel();
    for _ in 0..100 {
        let mut done = ctx.done();
        let (c, w) = CountingWaker::new();
        assert!(poll_once(&mut done, &w).is_pending());
        drop(w);
        assert_eq!(Arc::strong_count(&c), 2);
        drop(done);
        assert_eq!(Arc::strong_count(&c), 1, "waker leaked after drop");
    }
}

/// `Done` moved between tasks and threads while the context is canceled
/// concurrently: the latest task is always woken.
#[test]
fn done_moved_between_threads_stress() {
    within("done_moved_between_threads_stress", || {
        for i in 0..2000 {
            let (ctx, guard) = Context::background().with_cancel();
            let done = ctx.done();
            let t = thread::spawn(move || {
                for _ in 0..(i % 40) {
                    std::hint::spin_loop();
                }
                guard.cancel();
            });
            // Poll once here with one waker, then finish on another thread.
            let mut done = done;
            let (_c, w) = CountingWaker::new();
            let _ = poll_once(&mut done, &w);
            let err = thread::spawn(move || futures::executor::block_on(done))
                .join()
                .unwrap();
            assert_eq!(err, Error::Canceled);
            t.join().unwrap();
        }
    });
}

// ---------------------------------------------------------------------------
// Run / Sleep
// ---------------------------------------------------------------------------

#[test]
fn run_semantics() {
    // Context already ended, inner future ready: the context wins.
    let (ctx, guard) = Context::background().with_cancel();
    guard.cancel();
    let r = futures::executor::block_on(ctx.run(async { 1 }));
    assert_eq!(r, Err(Error::Canceled));
    // Inner future ends the context and finishes in the same poll: it finished
    // first.
    let (ctx, guard) = Context::background().with_cancel();
    let r = futures::executor::block_on(ctx.run(async move {
        guard.cancel();
        2
    }));
    assert_eq!(r, Ok(2));
    // Root: inner output.
    let r = futures::executor::block_on(Context::background().run(async { 3 }));
    assert_eq!(r, Ok(3));
}

#[test]
fn sleep_edges() {
    within("sleep_edges", || {
        let (ctx, guard) = Context::background().with_cancel();
        assert_eq!(
            futures::executor::block_on(ctx.sleep(Duration::ZERO)),
            Ok(())
        );
        guard.cancel();
        assert_eq!(
            futures::executor::block_on(ctx.sleep(Duration::ZERO)),
            Err(Error::Canceled)
        );
        let (ctx, guard) = Context::background().with_cancel();
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            guard.cancel();
        });
        assert_eq!(
            futures::executor::block_on(ctx.sleep(Duration::MAX)),
            Err(Error::Canceled)
        );
        t.join().unwrap();
        let (ctx, _g) = Context::background().with_timeout(Duration::from_millis(10));
        let deadline = ctx.deadline().unwrap();
        assert_eq!(
            futures::executor::block_on(ctx.sleep(Duration::MAX)),
            Err(Error::DeadlineExceeded)
        );
        assert!(Instant::now() >= deadline, "ended before its deadline");
    });
}

/// tokio (no time driver), smol, futures: done/sleep/run under each.
#[test]
fn executors_matrix_stress() {
    within("executors_matrix_stress", || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        for i in 0..200 {
            let (ctx, guard) = Context::background().with_timeout(Duration::from_millis(2));
            let c2 = ctx.clone();
            let job = async move {
                let a = c2.sleep(Duration::from_secs(60)).await;
                let b = c2.done().await;
                let r = c2.run(std::future::pending::<()>()).await;
                (a, b, r)
            };
            let want = (
                Err(Error::DeadlineExceeded),
                Error::DeadlineExceeded,
                Err(Error::DeadlineExceeded),
            );
            let got = match i % 4 {
                0 => rt.block_on(job),
                1 => mt.block_on(mt.spawn(job)).unwrap(),
                2 => smol::block_on(job),
                _ => futures::executor::block_on(job),
            };
            assert_eq!(got, want, "round {i}");
            drop(guard);
        }
    });
}

/// Random mix on many threads: bounded waits, deadlines, cancels, async
/// sleeps. Checks: never early, right error kind, no hang.
#[test]
fn mixed_random_stress() {
    within("mixed_random_stress", || {
        let threads: Vec<_> = (0..6u64)
            .map(|seed| {
                thread::spawn(move || {
                    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
                    let mut rnd = move |n: u64| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x % n
                    };
                    for _ in 0..400 {
                        let start = Instant::now();
                        let ctx_d = Duration::from_micros(rnd(3000));
                        let (ctx, guard) = Context::background().with_timeout(ctx_d);
                        let deadline = start + ctx_d;
                        let cancel_after = rnd(4);
                        let mut guard = Some(guard);
                        let canceller = if cancel_after == 0 {
                            let d = Duration::from_micros(rnd(2000));
                            let guard = guard.take().unwrap();
                            Some(thread::spawn(move || {
                                thread::sleep(d);
                                guard.cancel();
                            }))
                        } else {
                            None
                        };
                        let bound = Duration::from_micros(rnd(4000));
                        match rnd(4) {
                            0 => {
                                let got = ctx.wait_done_timeout(bound);
                                let el = start.elapsed();
                                match got {
                                    None => assert!(el >= bound),
                                    Some(Error::DeadlineExceeded) => {
                                        assert!(Instant::now() >= deadline)
                                    }
                                    Some(Error::Canceled) => assert!(cancel_after == 0),
                                }
                            }
                            1 => {
                                let got = ctx.sleep_blocking(bound);
                                match got {
                                    Ok(()) => assert!(start.elapsed() >= bound),
                                    Err(Error::DeadlineExceeded) => {
                                        assert!(Instant::now() >= deadline)
                                    }
                                    Err(Error::Canceled) => assert!(cancel_after == 0),
                                }
                            }
                            2 => {
                                let got = futures::executor::block_on(ctx.sleep(bound));
                                match got {
                                    Ok(()) => assert!(start.elapsed() >= bound),
                                    Err(Error::DeadlineExceeded) => {
                                        assert!(Instant::now() >= deadline)
                                    }
                                    Err(Error::Canceled) => assert!(cancel_after == 0),
                                }
                            }
                            _ => {
                                let e = ctx.wait_done();
                                if e == Error::DeadlineExceeded {
                                    assert!(Instant::now() >= deadline);
                                }
                            }
                        }
                        if let Some(c) = canceller {
                            c.join().unwrap();
                        }
                        drop(guard);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    });
}

// ---------------------------------------------------------------------------
// Findings
// ---------------------------------------------------------------------------

/// Regression: a `Run` whose inner future finished kept its `Done` registered in the
/// context's waiter slab (holding the task's waker) for as long as the
/// completed `Run` lives, and that finished task is woken when the context
/// later ends. Same for `RunStream` once the stream ended, and for a `Sleep`
/// that completed `Ok` (its `Done`).
#[test]
fn regression_a_completed_run_keeps_no_registration() {
    let (ctx, guard) = Context::background().with_cancel();
    let mut run = ctx.run(futures::future::ready(7));
    // A pending Done first (so the registration exists), then the output.
    let mut run2 = ctx.run(futures::future::poll_fn({
        let mut first = true;
        move |_| {
            if std::mem::take(&mut first) {
                Poll::Pending
            } else {
                Poll::Ready(8)
            }
        }
    }));
    let (c, w) = CountingWaker::new();
    assert_eq!(poll_once(&mut run, &w), Poll::Ready(Ok(7)));
    assert!(poll_once(&mut run2, &w).is_pending());
    assert_eq!(poll_once(&mut run2, &w), Poll::Ready(Ok(8)));
    let (cs, ws) = CountingWaker::new();
    let mut sleep = ctx.sleep(Duration::ZERO);
    assert_eq!(poll_once(&mut sleep, &ws), Poll::Ready(Ok(())));
    drop((w, ws));
    assert_eq!(
        Arc::strong_count(&c),
        1,
        "a completed Run still holds the task's waker in the context's slab"
    );
    assert_eq!(
        Arc::strong_count(&cs),
        1,
        "a completed Sleep still holds the task's waker in the context's slab"
    );
    guard.cancel();
    assert_eq!(c.wakes(), 0, "finished task woken");
    drop((run, run2, sleep));
}

#[test]
fn regression_a_sleep_cut_short_keeps_no_timer_entry() {
    // Regression: a Sleep cut short by its context kept its timer entry
    // (holding the task's waker) until the Sleep was dropped: woken again an
    // hour later.
    let (ctx, guard) = Context::background().with_cancel();
    let mut sleep = ctx.sleep(Duration::from_secs(3600));
    let (ct, wt) = CountingWaker::new();
    assert!(poll_once(&mut sleep, &wt).is_pending());
    guard.cancel();
    assert_eq!(
        poll_once(&mut sleep, &wt),
        Poll::Ready(Err(Error::Canceled))
    );
    drop(wt);
    assert_eq!(
        Arc::strong_count(&ct),
        1,
        "a Sleep that returned Err still holds the task's waker in the timer"
    );
    drop(sleep);
}

/// Regression: a thread blocked in `wait_done` that wakes at its deadline
/// and fires it itself (the timer thread being busy) runs the other waiters'
/// wakers, and a panic in one of them came out of this `wait_done` instead
/// of its `Error`. When the timer thread fires the same deadline, that panic
/// is contained there; which thread fires is a race, so it is contained
/// here too.
#[test]
fn regression_wait_done_self_fire_with_a_foreign_panicking_waker() {
    within("wait_done self-fire", || {
        // Keep the global timer thread busy past the deadline.
        let _busy = cancelctx::timer::Timer::global()
            .schedule(Instant::now(), || thread::sleep(Duration::from_millis(400)));
        thread::sleep(Duration::from_millis(20));
        let (ctx, _g) = Context::background().with_timeout(Duration::from_millis(30));
        struct Boom;
        impl Wake for Boom {
            fn wake(self: Arc<Self>) {
                panic!("someone else's waker");
            }
        }
        let mut other = ctx.done();
        assert!(poll_once(&mut other, &Waker::from(Arc::new(Boom))).is_pending());
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ctx.wait_done()));
        assert_eq!(
            got.ok(),
            Some(Error::DeadlineExceeded),
            "wait_done panicked with another task's waker's panic"
        );
    });
}
