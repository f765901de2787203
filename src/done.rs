//! Waiting for a context to end: the [`Done`] future and the blocking waits.
//!
//! One registration mechanism serves both: a waiter puts a [`Waker`] in its
//! context's waiter slab (`CancelNode::poll_done`), and the canceller wakes
//! it after releasing every lock. `Done` registers its task's waker; the
//! blocking waits register a waker that unparks their thread. So the two
//! cannot disagree, and no waker (user code) ever runs under a lock.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use futures_core::future::FusedFuture;

use crate::context::Context;
use crate::error::Error;
use crate::expiry::{self, park_toward};
use crate::node::CancelNode;
use crate::sync;

/// A registration in one node's waiter slab, withdrawn on drop.
struct Waiter {
    node: Arc<CancelNode>,
    key: Option<usize>,
}

impl Waiter {
    fn new(node: &Arc<CancelNode>) -> Waiter {
        Waiter {
            node: node.clone(),
            key: None,
        }
    }

    /// `Some(err)` once done; otherwise `waker` is registered (replacing the
    /// previous one) and will be woken when the node is done.
    fn poll(&mut self, waker: &Waker) -> Option<Error> {
        self.node.poll_done(&mut self.key, waker)
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.node.cancel_wait(key);
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
/// Dropping a `Done` at any time is safe: it only withdraws its waker.
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
            DoneState::Waiting(waiter) => {
                match expiry::observe(&waiter.node).or_else(|| waiter.poll(cx.waker())) {
                    Some(err) => Poll::Ready(err),
                    None => Poll::Pending,
                }
            }
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

impl Done {
    /// Withdraws this `Done`'s registration, if any: for a wrapper (`Run`,
    /// `RunStream`, `Sleep`) that has completed and will not wait again, so
    /// its task's waker does not stay in the context's slab (and is not
    /// woken) for as long as the completed wrapper lives.
    pub(crate) fn disarm(&mut self) {
        if let DoneState::Waiting(_) = self.state {
            self.state = DoneState::Never;
        }
    }

    /// The context's error now, for a caller that has just read the clock
    /// (`now`): ends the context first if its deadline has passed and the
    /// timer thread has not fired it yet. Does not register a waker.
    pub(crate) fn err_at(&self, now: Instant) -> Option<Error> {
        match &self.state {
            DoneState::Never => None,
            DoneState::Ended(err) => Some(*err),
            DoneState::Waiting(waiter) => {
                expiry::expire_if_passed(&waiter.node, now);
                waiter.node.err()
            }
        }
    }
}

impl fmt::Debug for Done {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (err, listening) = match &self.state {
            DoneState::Never => (None, false),
            DoneState::Ended(err) => (Some(*err), false),
            DoneState::Waiting(w) => (w.node.err(), w.key.is_some()),
        };
        f.debug_struct("Done")
            .field("err", &err)
            .field("listening", &listening)
            .finish()
    }
}

impl Context {
    /// A future that resolves to this context's [`Error`] once it is done:
    /// Go's `<-ctx.Done()`, on any executor.
    ///
    /// Never allocates for a context that is already done.
    ///
    /// For a check that must not wait, use [`is_done`](Context::is_done): a
    /// `Done` polled on a live context registers its waker, as it must to be
    /// woken.
    #[doc(alias = "Done")]
    #[doc(alias = "cancelled")]
    pub fn done(&self) -> Done {
        let state = match self.scope() {
            None => DoneState::Never,
            // A plain load: the first poll checks the clock (`expiry`).
            Some(node) => match node.err() {
                Some(err) => DoneState::Ended(err),
                None => DoneState::Waiting(Waiter::new(node)),
            },
        };
        Done {
            state,
            terminated: false,
        }
    }

    /// Blocks the calling thread until this context is done.
    ///
    /// The thread parks (no spinning) and is woken by the canceller or the
    /// timer thread. With a deadline, it also wakes by itself at the deadline
    /// and, if the timer thread has not fired it yet (a saturated machine may
    /// not have given it the CPU), fires it itself: its wake-up then costs
    /// one scheduling delay, not two. Never before the deadline.
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
        let Some(node) = self.scope() else {
            loop {
                sync::park();
            }
        };
        if let Some(err) = node.err() {
            return err;
        }
        let waker = sync::thread_waker();
        let mut waiter = Waiter::new(node);
        let mut ctx_deadline = node.deadline;
        loop {
            if let Some(err) = waiter.poll(&waker) {
                return err;
            }
            match ctx_deadline {
                Some(at) => ctx_deadline = park_toward(node, at),
                None => sync::park(),
            }
        }
    }

    /// Blocks until this context is done or `timeout` has passed; `None` on
    /// timeout. A `timeout` too large for an [`Instant`] waits forever.
    ///
    /// Like [`wait_done`](Context::wait_done), it ends the context itself if
    /// it finds the context's deadline passed and the timer thread has not
    /// fired it yet, so `wait_done_timeout(Duration::ZERO)` is a look that
    /// never reports a context live past its deadline.
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
        if let Some(err) = node.err() {
            return Some(err);
        }
        let waker = sync::thread_waker();
        let mut waiter = Waiter::new(node);
        let mut ctx_deadline = node.deadline;
        loop {
            if let Some(err) = waiter.poll(&waker) {
                return Some(err);
            }
            let now = Instant::now();
            if now >= deadline {
                // Withdraws the waker (dropping `waiter`), then a last look,
                // which ends the context if its deadline has passed too (the
                // timer thread may not have run yet).
                drop(waiter);
                expiry::expire_if_passed(node, now);
                return node.err();
            }
            match ctx_deadline {
                Some(at) if at < deadline => ctx_deadline = park_toward(node, at),
                _ => sync::park_timeout(deadline - now),
            }
        }
    }
}

/// Parks until `deadline` (never early, spurious wake-ups absorbed).
fn park_until(deadline: Instant) {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        sync::park_timeout(deadline - now);
    }
}
