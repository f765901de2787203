//! Waiting for a context to end: the [`Done`] future and the blocking waits.
//!
//! One poll loop (`Waiter::poll_with`) serves both: `Done` drives it with
//! `event-listener-strategy`'s non-blocking strategy, `wait_done` with the
//! blocking one, so the two cannot disagree.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, ready};
use std::time::{Duration, Instant};

use event_listener::{EventListener, Listener};
use event_listener_strategy::{Blocking, NonBlocking, Strategy};
use futures_core::future::FusedFuture;

use crate::context::Context;
use crate::error::Error;
use crate::node::CancelNode;

/// The check-listen-check loop over one node's event.
struct Waiter {
    node: Arc<CancelNode>,
    listener: Option<EventListener>,
}

impl Waiter {
    fn poll_with<'a, S: Strategy<'a>>(
        &mut self,
        strategy: &mut S,
        cx: &mut S::Context,
    ) -> Poll<Error> {
        loop {
            if let Some(err) = self.node.err() {
                self.listener = None;
                return Poll::Ready(err);
            }
            if self.listener.is_some() {
                ready!(strategy.poll(&mut self.listener, cx));
            } else {
                self.listener = Some(self.node.event.listen());
            }
        }
    }
}

/// Future returned by [`Context::done`]: resolves to the context's [`Error`]
/// once it is done.
///
/// Works on every executor (it registers with the context's own event, not
/// with a runtime), is `Unpin + Send + Sync + 'static` and a
/// [`FusedFuture`]. It is ready at once when the context is already done,
/// without allocating; for a context that can never end (a root, or below
/// [`without_cancel`](Context::without_cancel)) it stays pending forever.
///
/// # Cancellation safety
///
/// Dropping a `Done` at any time is safe: it only unregisters its listener.
/// Polling it with a different waker replaces the previous one; only the
/// latest waker is woken.
///
/// # Examples
///
/// ```
/// use cancelctx::{Context, Error};
///
/// let (ctx, guard) = Context::background().with_cancel();
/// let done = ctx.done();
/// std::thread::spawn(move || guard.cancel());
/// assert_eq!(futures::executor::block_on(done), Error::Canceled);
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct Done {
    state: DoneState,
    terminated: bool,
}

enum DoneState {
    /// The context can never end.
    Never,
    /// It had ended when `done()` was called: nothing to wait for or clone.
    Ended(Error),
    Waiting(Waiter),
}

impl Future for Done {
    type Output = Error;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Error> {
        let poll = match &mut self.state {
            DoneState::Never => return Poll::Pending,
            DoneState::Ended(err) => Poll::Ready(*err),
            DoneState::Waiting(waiter) => waiter.poll_with(&mut NonBlocking::default(), cx),
        };
        if poll.is_ready() {
            self.terminated = true;
        }
        poll
    }
}

impl FusedFuture for Done {
    fn is_terminated(&self) -> bool {
        self.terminated
    }
}

impl fmt::Debug for Done {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (err, listening) = match &self.state {
            DoneState::Never => (None, false),
            DoneState::Ended(err) => (Some(*err), false),
            DoneState::Waiting(w) => (w.node.err(), w.listener.is_some()),
        };
        f.debug_struct("Done").field("err", &err).field("listening", &listening).finish()
    }
}

impl Context {
    /// A future that resolves to this context's [`Error`] once it is done:
    /// Go's `<-ctx.Done()`, on any executor.
    ///
    /// Never allocates for a context that is already done.
    ///
    /// For a check that must not wait, use [`is_done`](Context::is_done): a
    /// `Done` polled on a live context registers a listener (one allocation),
    /// as it must to be woken.
    #[doc(alias = "Done")]
    pub fn done(&self) -> Done {
        let state = match self.scope() {
            None => DoneState::Never,
            Some(node) => match node.err() {
                Some(err) => DoneState::Ended(err),
                None => DoneState::Waiting(Waiter { node: node.clone(), listener: None }),
            },
        };
        Done { state, terminated: false }
    }

    /// Blocks the calling thread until this context is done.
    ///
    /// The thread parks (no spinning) and is woken by the canceller or the
    /// timer thread.
    ///
    /// # Blocking
    ///
    /// Never call this from async code: it blocks the executor thread. Await
    /// [`done`](Context::done) there instead. On a context that can never end
    /// (a root, or below `without_cancel`) this blocks forever; use
    /// [`wait_done_timeout`](Context::wait_done_timeout) when unsure.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cancelctx::{Context, Error};
    ///
    /// let (ctx, _guard) = Context::background().with_timeout(Duration::from_millis(5));
    /// assert_eq!(ctx.wait_done(), Error::DeadlineExceeded);
    /// ```
    pub fn wait_done(&self) -> Error {
        let Some(mut waiter) = self.waiter() else {
            loop {
                std::thread::park();
            }
        };
        loop {
            if let Poll::Ready(err) = waiter.poll_with(&mut Blocking::default(), &mut ()) {
                return err;
            }
        }
    }

    /// Blocks until this context is done or `timeout` has passed; `None` on
    /// timeout. A `timeout` too large for an [`Instant`] waits forever.
    ///
    /// # Blocking
    ///
    /// Never call this from async code; see [`wait_done`](Context::wait_done).
    ///
    /// ```
    /// use std::time::Duration;
    /// use cancelctx::Context;
    ///
    /// let (ctx, _guard) = Context::background().with_cancel();
    /// assert_eq!(ctx.wait_done_timeout(Duration::from_millis(1)), None);
    /// ```
    pub fn wait_done_timeout(&self, timeout: Duration) -> Option<Error> {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.wait_done_deadline(deadline),
            None => Some(self.wait_done()),
        }
    }

    /// Blocks until this context is done or `deadline` has passed; `None` if
    /// the deadline came first.
    ///
    /// # Blocking
    ///
    /// Never call this from async code; see [`wait_done`](Context::wait_done).
    pub fn wait_done_deadline(&self, deadline: Instant) -> Option<Error> {
        let Some(node) = self.scope() else {
            park_until(deadline);
            return None;
        };
        loop {
            if let Some(err) = node.err() {
                return Some(err);
            }
            let listener = node.event.listen();
            if let Some(err) = node.err() {
                return Some(err);
            }
            if listener.wait_deadline(deadline).is_none() {
                return node.err();
            }
        }
    }

    fn waiter(&self) -> Option<Waiter> {
        self.scope().map(|node| Waiter {
            node: node.clone(),
            listener: None,
        })
    }
}

/// Parks until `deadline` (never early, spurious wake-ups absorbed).
fn park_until(deadline: Instant) {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        std::thread::park_timeout(deadline - now);
    }
}
