//! Interop with tokio-util's [`CancellationToken`] (feature `tokio-util`), in
//! both directions, with no runtime and no thread of its own:
//!
//! - [`Context::cancellation_token`]: a token that is canceled when the
//!   context ends, owned by a [`TokenGuard`];
//! - [`Context::with_cancellation_token`]: a child context that is canceled
//!   when a token is, with cause [`TokenCanceled`].
//!
//! Use them where a tokio-based library takes a `CancellationToken` and the
//! rest of the program speaks [`Context`], or the other way round.
//!
//! # Examples
//!
//! Both directions on a plain thread (no runtime: a token's futures need
//! none either):
//!
//! ```
//! use cancelctx::tokio_util::TokenCanceled;
//! use cancelctx::{Context, Error};
//! use tokio_util::sync::CancellationToken;
//!
//! // Context -> token: the token ends with the context.
//! let (ctx, guard) = Context::background().with_cancel();
//! let token = ctx.cancellation_token();
//! guard.cancel();
//! futures::executor::block_on(token.token().cancelled());
//!
//! // Token -> context: the child ends with the token, saying why.
//! let shutdown = CancellationToken::new();
//! let (ctx, _guard) = Context::background().with_cancellation_token(&shutdown);
//! shutdown.cancel();
//! assert_eq!(ctx.err(), Some(Error::Canceled)); // synchronous: already done
//! assert!(ctx.cause().unwrap().is::<TokenCanceled>());
//! ```
//!
//! # Design
//!
//! A `CancellationToken` has no callback API, only futures
//! (`cancelled_owned()`), so each direction needs something that reacts to
//! the other side ending without an executor:
//!
//! - **Context → token** is an [`after_func`](Context::after_func)
//!   registration that cancels the token. It runs on the crate's callback
//!   pool, never inline in the canceller or on the timer thread, so the token
//!   is canceled *right after* the context ends (microseconds), not inside
//!   [`CancelGuard::cancel`]: [`Context::err`] is the source of truth. The
//!   [`TokenGuard`] owns the registration and stops it when dropped.
//! - **Token → context** polls the token's `cancelled_owned()` future with a
//!   waker of its own (a small `Wake` impl, no task, no runtime). tokio wakes
//!   it inside [`CancellationToken::cancel`], after releasing the token's
//!   locks (tokio-util 0.7.20 and later), and the waker cancels the child
//!   there and then: when `cancel()` returns, the context is done. The child's
//!   own end (its guard, its parent, its deadline) is watched with an
//!   internal registration like `after_func`'s that drops the token's future,
//!   so the watch never outlives the context; unlike `after_func`'s, it does
//!   not keep the child observable, and the child's last drop releases it. A waker of the child's that panics when that cancel wakes
//!   it does not unwind into tokio (which would leave the token's other
//!   waiters unwoken): the panic is reported on stderr and contained, as a
//!   panicking `after_func` callback's is.
//!
//! # Memory
//!
//! Nothing leaks when either side is dropped or ends first:
//!
//! - a [`TokenGuard`] dropped (or its context ended) leaves nothing in the
//!   context: [`child_count`](Context::child_count) goes back down at once;
//! - a child from [`with_cancellation_token`](Context::with_cancellation_token)
//!   whose guard is dropped, whose parent ends, or whose token is canceled
//!   releases its watch (the token's future and clone) right after;
//! - such a child that nothing observes any more (every `Context` handle on
//!   it, and everything derived from it, dropped) is freed at once, like any
//!   context, even while its guard lives or was
//!   [`detach`](CancelGuard::detach)ed: it leaves its parent and releases its
//!   watch in that last drop. The watch reacts to the child's end without
//!   keeping it observable.
//!
//! A [`detach`](TokenGuard::detach)ed [`TokenGuard`] is different: its token
//! is an observer of the context (whoever holds a clone waits for it), so,
//! as with any [`after_func`](Context::after_func) registration, its link
//! lives until the context ends and keeps the context's deadline armed.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Wake, Waker};

use ::tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::after_func::{self, AfterFunc, Watch};
use crate::context::Context;
use crate::guard::CancelGuard;
use crate::sync::Mutex;

/// The cause of a context from
/// [`with_cancellation_token`](Context::with_cancellation_token) that ended
/// because its token was canceled.
///
/// ```
/// use cancelctx::Context;
/// use cancelctx::tokio_util::TokenCanceled;
/// use tokio_util::sync::CancellationToken;
///
/// let token = CancellationToken::new();
/// token.cancel();
/// let (ctx, _guard) = Context::background().with_cancellation_token(&token);
/// assert_eq!(ctx.cause().unwrap().downcast_ref(), Some(&TokenCanceled));
/// assert_eq!(TokenCanceled.to_string(), "cancellation token canceled");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TokenCanceled;

impl fmt::Display for TokenCanceled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cancellation token canceled")
    }
}

impl StdError for TokenCanceled {}

/// A [`CancellationToken`] tied to a [`Context`], from
/// [`Context::cancellation_token`]: the token is canceled when the context
/// ends, or when this guard is dropped.
///
/// Like [`CancelGuard`], the guard ends what its scope started: hand out
/// clones of [`token`](TokenGuard::token) freely, and they are all canceled
/// when the guard goes out of scope. Dropping it also removes its
/// registration from the context at once. [`detach`](TokenGuard::detach)
/// gives the guard up: the token then lives on until the context ends.
///
/// # Examples
///
/// ```
/// use cancelctx::Context;
///
/// let (ctx, _guard) = Context::background().with_cancel();
/// let linked = ctx.cancellation_token();
/// let token = linked.token().clone(); // e.g. for a tokio-util based library
/// assert_eq!(ctx.child_count(), 1);
/// drop(linked); // scope ended before the context
/// assert!(token.is_cancelled());
/// assert_eq!(ctx.child_count(), 0);
/// assert!(!ctx.is_done());
/// ```
#[must_use = "dropping a TokenGuard cancels its token at once; bind it to a variable"]
pub struct TokenGuard {
    token: CancellationToken,
    /// `None` once detached, or when the context was done at creation.
    registration: Option<AfterFunc>,
    detached: bool,
}

impl TokenGuard {
    /// The linked token. Clone it to hand it out; every clone is canceled
    /// with the context or when this guard is dropped.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Gives the guard up without canceling: the token is then canceled when
    /// the context ends, and never if it cannot end (a root, or below
    /// [`without_cancel`](Context::without_cancel)). The registration stays
    /// in the context until it ends, keeping it observable.
    ///
    /// ```
    /// use cancelctx::Context;
    ///
    /// let (ctx, guard) = Context::background().with_cancel();
    /// let token = ctx.cancellation_token().detach();
    /// assert!(!token.is_cancelled());
    /// guard.cancel();
    /// futures::executor::block_on(token.cancelled()); // soon after
    /// ```
    pub fn detach(mut self) -> CancellationToken {
        // Dropping an `AfterFunc` leaves its callback registered.
        drop(self.registration.take());
        self.detached = true;
        self.token.clone()
    }
}

impl Drop for TokenGuard {
    fn drop(&mut self) {
        if let Some(registration) = self.registration.take() {
            registration.stop();
        }
        if !self.detached {
            self.token.cancel();
        }
    }
}

impl fmt::Debug for TokenGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenGuard")
            .field("cancelled", &self.token.is_cancelled())
            .field("registration", &self.registration)
            .finish()
    }
}

impl Context {
    /// A [`CancellationToken`] that is canceled when this context ends (or
    /// when the returned guard is dropped): hand a [`Context`]'s cancellation
    /// to a tokio-util based API.
    ///
    /// The token is canceled on the crate's callback pool right after the
    /// context ends, never inline in the canceller or on the timer thread;
    /// if the context is already done, it is canceled before this returns.
    /// One [`after_func`](Context::after_func) registration, counted in
    /// [`child_count`](Context::child_count) until the guard is dropped or
    /// the context ends.
    ///
    /// Keep the guard in a binding while the token is in use: it cancels
    /// the token when dropped, so a one-liner such as
    /// `ctx.cancellation_token().token().clone()` compiles without a warning
    /// and hands out a token that is **already canceled**. To hand out a
    /// token that outlives the scope, use [`TokenGuard::detach`]:
    ///
    /// ```
    /// use cancelctx::Context;
    ///
    /// let (ctx, _guard) = Context::background().with_cancel();
    /// let token = ctx.cancellation_token().token().clone(); // guard dropped here
    /// assert!(token.is_cancelled() && !ctx.is_done());
    /// let token = ctx.cancellation_token().detach(); // lives until `ctx` ends
    /// assert!(!token.is_cancelled());
    /// ```
    ///
    /// ```
    /// use std::time::Duration;
    /// use cancelctx::Context;
    ///
    /// let (ctx, _guard) = Context::background().with_timeout(Duration::from_millis(5));
    /// let linked = ctx.cancellation_token();
    /// // No runtime needed: the crate's timer ends the context, the pool the token.
    /// futures::executor::block_on(linked.token().cancelled());
    /// assert!(ctx.is_done());
    /// ```
    pub fn cancellation_token(&self) -> TokenGuard {
        let token = CancellationToken::new();
        let registration = if self.is_done() {
            token.cancel();
            None
        } else {
            let linked = token.clone();
            Some(self.after_func(move || linked.cancel()))
        };
        TokenGuard {
            token,
            registration,
            detached: false,
        }
    }

    /// A child that is canceled when `token` is canceled (with cause
    /// [`TokenCanceled`]), when the returned guard is used or dropped, or when
    /// this context ends, whichever comes first.
    ///
    /// The child is canceled synchronously inside
    /// [`CancellationToken::cancel`]: when that returns, the child is done.
    /// If `token` is already canceled, the child is done at construction.
    /// Works with no runtime; spawns nothing. The watch on the token is
    /// released right after the child ends, whichever side ended it, or when
    /// the child is freed: the watch does not keep the child observable.
    ///
    /// ```
    /// use cancelctx::tokio_util::TokenCanceled;
    /// use cancelctx::{Context, Error};
    /// use tokio_util::sync::CancellationToken;
    ///
    /// let shutdown = CancellationToken::new();
    /// let (request, _guard) = Context::background().with_cancellation_token(&shutdown);
    /// let waiter = {
    ///     let request = request.clone();
    ///     std::thread::spawn(move || request.wait_done())
    /// };
    /// shutdown.cancel();
    /// assert_eq!(waiter.join().unwrap(), Error::Canceled);
    /// assert!(request.cause().unwrap().is::<TokenCanceled>());
    /// ```
    pub fn with_cancellation_token(&self, token: &CancellationToken) -> (Context, CancelGuard) {
        let (child, guard) = self.with_cancel();
        if child.is_done() {
            return (child, guard);
        }
        if token.is_cancelled() {
            guard.cancel_with_cause(TokenCanceled);
            return (child, guard);
        }
        let Some(node) = child.scope() else {
            return (child, guard); // `with_cancel` always makes a node
        };
        let watch = Arc::new(TokenWatch {
            link: Mutex::new(Some(Link {
                cancelled: Box::pin(token.clone().cancelled_owned()),
                canceller: CancelGuard::new(node),
                registration: None,
            })),
        });
        // Watch the child's own end (its guard, its parent, its deadline) and
        // its release: the watch does not keep it observable, and when the
        // child is freed the unrun callback's `Drop` releases the link.
        let registration = {
            let release = Release(watch.clone());
            after_func::watch(&child, move || drop(release))
        };
        if let Some(link) = watch.link.lock().as_mut() {
            link.registration = Some(registration);
        } // else the child ended meanwhile and the callback already ran.
        // First poll: registers the waker with the token (or fires at once).
        watch.poll();
        (child, guard)
    }
}

/// Token → context: the token's `cancelled_owned()` future, polled by its own
/// waker (this struct), with what to do when it completes.
struct TokenWatch {
    /// `None` once the link ended, either way. Only ever locked briefly: to
    /// poll the token's future (which takes the token's `Notify` lock inside
    /// it; tokio never calls a waker while holding that lock, so no cycle), or
    /// to take the link out. Everything the link does or drops runs after
    /// releasing this lock.
    link: Mutex<Option<Link>>,
}

struct Link {
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    /// A second, weak handle on the child: cancels it without keeping it alive.
    canceller: CancelGuard,
    /// The child's watch that calls `release`; set right after registering
    /// it.
    registration: Option<Watch>,
}

/// The child's watch's callback: releases the link when run (the child
/// ended) or dropped unrun (the child was freed, nobody observing it).
struct Release(Arc<TokenWatch>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl TokenWatch {
    /// Polls the token's future; cancels the child if the token is canceled.
    fn poll(self: &Arc<Self>) {
        let mut slot = self.link.lock();
        let Some(link) = slot.as_mut() else {
            return;
        };
        let waker = Waker::from(self.clone());
        if link
            .cancelled
            .as_mut()
            .poll(&mut TaskContext::from_waker(&waker))
            .is_pending()
        {
            return;
        }
        let fired = slot.take();
        drop(slot);
        if let Some(Link {
            cancelled,
            canceller,
            registration,
        }) = fired
        {
            drop(cancelled);
            // Stop watching the child first: cancelling it would only hand a
            // useless `release` to the callback pool.
            if let Some(registration) = registration {
                registration.stop();
            }
            canceller.cancel_with_cause(TokenCanceled);
        }
    }

    /// The child ended on its own (on the callback pool) or was freed (in its
    /// last owner's drop): stop watching the token.
    fn release(&self) {
        let ended = self.link.lock().take();
        if let Some(Link {
            cancelled,
            canceller,
            registration,
        }) = ended
        {
            drop(cancelled);
            // The child is done or gone: nothing to cancel.
            canceller.detach();
            drop(registration);
        }
    }
}

impl Wake for TokenWatch {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    /// Runs inside `CancellationToken::cancel`, in tokio's loop over the
    /// token's wakers: a panic here (a waker of the child's, woken by the
    /// cancel, re-raises its panic once the cancel's work is done) would
    /// make tokio drop the wakers after this one unwoken, and other linked
    /// children would never end. So it is contained and reported, as a
    /// panicking `after_func` callback is.
    fn wake_by_ref(self: &Arc<Self>) {
        crate::pool::run_contained(
            "a waker woken when a CancellationToken canceled its context",
            || self.poll(),
        );
    }
}
