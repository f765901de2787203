//! Bounding work by a context: [`Context::run`], [`Context::sleep`] and
//! [`Context::sleep_blocking`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use futures_core::Stream;
use futures_core::future::FusedFuture;
use futures_core::stream::FusedStream;
use pin_project_lite::pin_project;

use crate::context::Context;
use crate::done::Done;
use crate::error::Error;

pin_project! {
    /// Future returned by [`Context::run`]: the inner future's output, or the
    /// context's [`Error`] as soon as the context ends.
    ///
    /// # Cancellation safety
    ///
    /// When the context ends first, the inner future is dropped in place
    /// before `Err` is returned; dropping a `Run` drops the inner future.
    /// Whatever cancellation safety the inner future has, `Run` has.
    #[must_use = "futures do nothing unless polled"]
    #[derive(Debug)]
    pub struct Run<F> {
        done: Done,
        #[pin]
        future: Option<F>,
    }
}

impl<F: Future> Future for Run<F> {
    type Output = Result<F::Output, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(future) = this.future.as_mut().as_pin_mut() else {
            panic!("`Run` polled after completion");
        };
        // The context first: an ended context wins over a ready future, as in
        // Go's `select` with an already-closed `Done`.
        if let Poll::Ready(err) = Pin::new(&mut *this.done).poll(cx) {
            this.future.set(None);
            return Poll::Ready(Err(err));
        }
        let output = std::task::ready!(future.poll(cx));
        this.future.set(None);
        this.done.disarm();
        Poll::Ready(Ok(output))
    }
}

impl<F: Future> FusedFuture for Run<F> {
    fn is_terminated(&self) -> bool {
        self.future.is_none()
    }
}

pin_project! {
    /// Stream returned by [`Context::run_stream`]: the inner stream's items
    /// until the context ends, then the end of the stream.
    ///
    /// # Cancellation safety
    ///
    /// When the context ends, the inner stream is dropped in place and the
    /// stream ends; an item already produced is never lost (the context is
    /// checked before polling the inner stream, not after).
    #[must_use = "streams do nothing unless polled"]
    #[derive(Debug)]
    pub struct RunStream<S> {
        done: Done,
        #[pin]
        stream: Option<S>,
    }
}

impl<S: Stream> Stream for RunStream<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<S::Item>> {
        let mut this = self.project();
        let Some(stream) = this.stream.as_mut().as_pin_mut() else {
            return Poll::Ready(None);
        };
        if Pin::new(&mut *this.done).poll(cx).is_ready() {
            this.stream.set(None);
            return Poll::Ready(None);
        }
        let item = std::task::ready!(stream.poll_next(cx));
        if item.is_none() {
            this.stream.set(None);
            this.done.disarm();
        }
        Poll::Ready(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.stream {
            Some(stream) => (0, stream.size_hint().1),
            None => (0, Some(0)),
        }
    }
}

impl<S: Stream> FusedStream for RunStream<S> {
    fn is_terminated(&self) -> bool {
        self.stream.is_none()
    }
}

/// Future returned by [`Context::sleep`]: `Ok(())` after the duration,
/// `Err` as soon as the context ends first (a context deadline before the
/// sleep's end counts even if the timer thread has not fired it yet).
///
/// Driven by the crate's timer thread, not by any runtime's timer, so it
/// works on every executor and wakes on time when executors are busy.
///
/// # Cancellation safety
///
/// Dropping a `Sleep` at any time is safe and removes its timer entry at once.
///
/// # Precision
///
/// Never completes early. See the `cancelctx-timer` crate for typical
/// lateness (tens of microseconds on an idle machine).
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct Sleep {
    done: Done,
    timer: cancelctx_timer::Sleep,
    terminated: bool,
}

impl Future for Sleep {
    type Output = Result<(), Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let result = if let Poll::Ready(err) = Pin::new(&mut this.done).poll(cx) {
            // Drops the timer entry (and the waker it holds) now, not when
            // this `Sleep` is dropped: an unarmed sleep schedules nothing.
            if !this.timer.is_elapsed() {
                this.timer = cancelctx_timer::Timer::global().sleep(Duration::MAX);
            }
            Err(err)
        } else if Pin::new(&mut this.timer).poll(cx).is_ready() {
            // The sleep is over: if the context's deadline came first and
            // the timer thread has not fired it yet, the context wins.
            match this.done.err_at(Instant::now()) {
                Some(err) => Err(err),
                None => {
                    this.done.disarm();
                    Ok(())
                }
            }
        } else {
            return Poll::Pending;
        };
        this.terminated = true;
        Poll::Ready(result)
    }
}

impl FusedFuture for Sleep {
    fn is_terminated(&self) -> bool {
        self.terminated
    }
}

impl Context {
    /// Runs `future` until it completes or this context ends, whichever comes
    /// first: `Ok(output)`, or `Err(error)` (the inner future is then
    /// dropped). Works on every executor.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cancelctx::{Context, Error};
    ///
    /// let (ctx, _guard) = Context::background().with_timeout(Duration::from_millis(5));
    /// let forever = std::future::pending::<()>();
    /// let result = futures::executor::block_on(ctx.run(forever));
    /// assert_eq!(result, Err(Error::DeadlineExceeded));
    /// ```
    #[doc(alias = "run_until_cancelled")]
    pub fn run<F: Future>(&self, fut: F) -> Run<F> {
        Run {
            done: self.done(),
            future: Some(fut),
        }
    }

    /// The items of `stream` until it ends or this context ends, whichever
    /// comes first (check [`err`](Context::err) afterwards to tell which).
    ///
    /// ```
    /// use futures::StreamExt;
    /// use cancelctx::Context;
    ///
    /// let (ctx, guard) = Context::background().with_cancel();
    /// let mut numbers = ctx.run_stream(futures::stream::iter(0..));
    /// futures::executor::block_on(async {
    ///     assert_eq!(numbers.next().await, Some(0));
    ///     assert_eq!(numbers.next().await, Some(1));
    ///     guard.cancel();
    ///     assert_eq!(numbers.next().await, None);
    /// });
    /// ```
    pub fn run_stream<S: Stream>(&self, stream: S) -> RunStream<S> {
        RunStream {
            done: self.done(),
            stream: Some(stream),
        }
    }

    /// Sleeps for `duration` unless this context ends first: `Ok(())` after
    /// the duration, `Err(error)` as soon as the context ends. Never early.
    /// A duration too large for an [`Instant`](std::time::Instant) sleeps
    /// until the context ends.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cancelctx::{Context, Error};
    ///
    /// let ctx = Context::background();
    /// assert_eq!(futures::executor::block_on(ctx.sleep(Duration::from_millis(1))), Ok(()));
    /// let (ctx, _guard) = ctx.with_timeout(Duration::from_millis(1));
    /// let slept = futures::executor::block_on(ctx.sleep(Duration::from_secs(3600)));
    /// assert_eq!(slept, Err(Error::DeadlineExceeded));
    /// ```
    pub fn sleep(&self, duration: Duration) -> Sleep {
        Sleep {
            done: self.done(),
            timer: cancelctx_timer::Timer::global().sleep(duration),
            terminated: false,
        }
    }

    /// Blocks the thread for `duration` unless this context ends first:
    /// `Ok(())` after the duration, `Err(error)` as soon as it ends.
    ///
    /// # Blocking
    ///
    /// Never call this from async code: await [`sleep`](Context::sleep).
    ///
    /// ```
    /// use std::time::Duration;
    /// use cancelctx::{Context, Error};
    ///
    /// let (ctx, guard) = Context::background().with_cancel();
    /// assert_eq!(ctx.sleep_blocking(Duration::from_millis(1)), Ok(()));
    /// guard.cancel();
    /// assert_eq!(ctx.sleep_blocking(Duration::from_secs(3600)), Err(Error::Canceled));
    /// ```
    pub fn sleep_blocking(&self, duration: Duration) -> Result<(), Error> {
        match self.wait_done_timeout(duration) {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}
