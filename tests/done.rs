//! `Done`, `Run` and `Sleep` polled by hand with counting wakers: exact
//! wake counts, waker replacement, drop while registered.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use cancelctx::{Context, Error};
use common::{CountingWaker, PATIENCE, eventually, poll_once};
use futures::future::FusedFuture;

#[test]
fn done_wakes_exactly_once_on_cancel() {
    let (ctx, guard) = Context::background().with_cancel();
    let (counter, waker) = CountingWaker::new();
    let mut done = ctx.done();
    assert!(poll_once(&mut done, &waker).is_pending());
    assert!(poll_once(&mut done, &waker).is_pending());
    assert_eq!(counter.wakes(), 0);
    assert!(!done.is_terminated());
    guard.cancel();
    assert_eq!(counter.wakes(), 1);
    assert_eq!(poll_once(&mut done, &waker), Poll::Ready(Error::Canceled));
    assert!(done.is_terminated());
    // Polling again is harmless and still ready.
    assert_eq!(poll_once(&mut done, &waker), Poll::Ready(Error::Canceled));
    assert_eq!(counter.wakes(), 1);
}

#[test]
fn only_the_latest_waker_is_woken() {
    let (ctx, guard) = Context::background().with_cancel();
    let (first, w1) = CountingWaker::new();
    let (second, w2) = CountingWaker::new();
    let mut done = ctx.done();
    assert!(poll_once(&mut done, &w1).is_pending());
    assert!(poll_once(&mut done, &w2).is_pending());
    guard.cancel();
    assert_eq!((first.wakes(), second.wakes()), (0, 1));
}

#[test]
fn every_done_future_is_woken_once() {
    let (parent, guard) = Context::background().with_cancel();
    let (child, _g) = parent.with_value(1u8).with_cancel();
    let mut futures = Vec::new();
    for ctx in [&parent, &child, &child.with_value(2u16)] {
        for _ in 0..3 {
            let (counter, waker) = CountingWaker::new();
            let mut done = ctx.done();
            assert!(poll_once(&mut done, &waker).is_pending());
            futures.push((counter, waker, done));
        }
    }
    guard.cancel();
    for (counter, waker, mut done) in futures {
        assert_eq!(counter.wakes(), 1);
        assert_eq!(poll_once(&mut done, &waker), Poll::Ready(Error::Canceled));
    }
}

#[test]
fn done_dropped_while_registered_is_fine() {
    let (ctx, guard) = Context::background().with_cancel();
    let (counter, waker) = CountingWaker::new();
    let mut done = ctx.done();
    assert!(poll_once(&mut done, &waker).is_pending());
    drop(done);
    guard.cancel();
    assert_eq!(counter.wakes(), 0);
}

#[test]
fn done_of_a_root_never_completes_and_never_wakes() {
    let (counter, waker) = CountingWaker::new();
    let mut done = Context::background().done();
    assert!(poll_once(&mut done, &waker).is_pending());
    let mut wc = Context::background()
        .with_cancel()
        .0
        .without_cancel()
        .done();
    assert!(poll_once(&mut wc, &waker).is_pending());
    assert_eq!(counter.wakes(), 0);
}

#[test]
fn done_is_ready_at_once_when_already_done() {
    let (ctx, guard) = Context::background().with_cancel();
    guard.cancel();
    let (counter, waker) = CountingWaker::new();
    assert_eq!(
        poll_once(&mut ctx.done(), &waker),
        Poll::Ready(Error::Canceled)
    );
    assert_eq!(counter.wakes(), 0);
}

#[test]
fn deadline_wakes_a_polled_done_from_the_timer_thread() {
    let (ctx, _g) = Context::background().with_timeout(Duration::from_millis(2));
    let (counter, waker) = CountingWaker::new();
    let mut done = ctx.done();
    if poll_once(&mut done, &waker).is_pending() {
        eventually("the timer woke the future", || counter.wakes() == 1);
    }
    assert_eq!(
        poll_once(&mut done, &waker),
        Poll::Ready(Error::DeadlineExceeded)
    );
}

#[test]
fn a_waker_that_cancels_a_context_does_not_deadlock() {
    // tokio #5429 shape: a wake that re-enters the cancellation machinery.
    struct CancellingWaker(std::sync::Mutex<Option<cancelctx::CancelGuard>>);
    impl std::task::Wake for CancellingWaker {
        fn wake(self: std::sync::Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &std::sync::Arc<Self>) {
            if let Some(g) = self.0.lock().unwrap().take() {
                g.cancel();
            }
        }
    }
    let (root, guard) = Context::background().with_cancel();
    let (a, _ga) = root.with_cancel();
    let (b, gb) = root.with_cancel();
    let (_c, gc) = b.with_cancel();
    let waker_state = std::sync::Arc::new(CancellingWaker(std::sync::Mutex::new(Some(gb))));
    let waker = std::task::Waker::from(waker_state.clone());
    let mut done = a.done();
    assert!(poll_once(&mut done, &waker).is_pending());
    // The wake happens during root's cancellation and cancels `b`, which the
    // same cancellation is handling.
    guard.cancel();
    assert!(b.is_done());
    // The guard of the grandchild is dropped inside the waker's guard drop.
    drop(gc);
    assert!(waker_state.0.lock().unwrap().is_none());
}

#[test]
fn run_returns_output_or_error_and_drops_the_inner_future() {
    struct DropFlag(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let (ctx, guard) = Context::background().with_cancel();
    assert_eq!(futures::executor::block_on(ctx.run(async { 7 })), Ok(7));

    let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = DropFlag(dropped.clone());
    let mut run = Box::pin(ctx.run(async move {
        let _flag = flag;
        std::future::pending::<()>().await
    }));
    let (counter, waker) = CountingWaker::new();
    let mut cx = TaskContext::from_waker(&waker);
    assert!(run.as_mut().poll(&mut cx).is_pending());
    guard.cancel();
    assert_eq!(counter.wakes(), 1);
    assert!(!dropped.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(
        run.as_mut().poll(&mut cx),
        Poll::Ready(Err(Error::Canceled))
    );
    assert!(
        dropped.load(std::sync::atomic::Ordering::SeqCst),
        "inner future dropped on cancellation"
    );
    assert!(run.is_terminated());
}

#[test]
fn sleep_completes_not_early_or_errs_when_canceled() {
    let ctx = Context::background();
    let start = std::time::Instant::now();
    assert_eq!(
        futures::executor::block_on(ctx.sleep(Duration::from_millis(5))),
        Ok(())
    );
    assert!(
        start.elapsed() >= Duration::from_millis(5),
        "slept too little"
    );

    let (ctx, guard) = Context::background().with_cancel();
    let mut sleep = ctx.sleep(Duration::from_secs(3600));
    let (counter, waker) = CountingWaker::new();
    assert!(poll_once(&mut sleep, &waker).is_pending());
    guard.cancel();
    assert!(counter.wakes() >= 1);
    assert_eq!(
        poll_once(&mut sleep, &waker),
        Poll::Ready(Err(Error::Canceled))
    );
    assert!(sleep.is_terminated());

    // A sleep that cannot end before the context does.
    let (ctx, _g) = Context::background().with_timeout(Duration::from_millis(3));
    let slept = futures::executor::block_on(ctx.sleep(Duration::MAX));
    assert_eq!(slept, Err(Error::DeadlineExceeded));
}

#[test]
fn sleep_blocking_respects_the_context() {
    let (ctx, guard) = Context::background().with_cancel();
    let waiter = {
        let ctx = ctx.clone();
        std::thread::spawn(move || ctx.sleep_blocking(PATIENCE * 100))
    };
    std::thread::sleep(Duration::from_millis(5));
    guard.cancel();
    assert_eq!(waiter.join().unwrap(), Err(Error::Canceled));
}

#[test]
fn done_on_many_threads_with_a_deadline() {
    let (ctx, _g) = Context::background().with_timeout(Duration::from_millis(20));
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let ctx = ctx.clone();
            std::thread::spawn(move || {
                if i % 2 == 0 {
                    ctx.wait_done()
                } else {
                    futures::executor::block_on(ctx.done())
                }
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), Error::DeadlineExceeded);
    }
}

/// A future polled once and then left: used to check `Pin` use compiles.
#[allow(dead_code)]
fn assert_unpin_done(done: cancelctx::Done) -> Pin<Box<cancelctx::Done>> {
    Box::pin(done)
}

#[test]
fn run_stream_yields_until_the_context_ends() {
    use futures::StreamExt;
    use futures::stream::FusedStream;
    let (ctx, guard) = Context::background().with_cancel();
    let mut s = ctx.run_stream(futures::stream::iter(0..3));
    let all: Vec<_> = futures::executor::block_on((&mut s).collect());
    assert_eq!(all, vec![0, 1, 2]);
    assert!(s.is_terminated());

    let mut s = ctx.run_stream(futures::stream::pending::<u8>());
    let (counter, waker) = CountingWaker::new();
    let mut cx = TaskContext::from_waker(&waker);
    assert!(s.poll_next_unpin(&mut cx).is_pending());
    guard.cancel();
    assert_eq!(counter.wakes(), 1);
    assert_eq!(s.poll_next_unpin(&mut cx), Poll::Ready(None));
    assert!(s.is_terminated());
}
