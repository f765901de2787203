//! [`CancelGuard`]: the one owner that ends a derived context.

use std::fmt;
use std::sync::{Arc, Weak};

use crate::error::{Cause, Error};
use crate::node::CancelNode;
use crate::observe::End;

/// Cancels the context it came with when used or dropped: Go's `cancel`
/// function with the `defer cancel()` built in.
///
/// `let (ctx, _guard) = parent.with_timeout(d);` keeps the context until the
/// end of the scope; `let (ctx, _) = ...` cancels it at once. Use
/// [`detach`](CancelGuard::detach) for the rare child that must outlive the
/// scope that made it: it then ends with its parent or its deadline.
///
/// The guard does not keep the context alive: once nothing can observe a
/// context (every `Context` clone, `Done`, `Run`, `Sleep` and `after_func`
/// registration of it is gone, and every context derived from it, a
/// [`without_cancel`](crate::Context::without_cancel) one included), its resources
/// are released even while the guard exists, and a later cancel does
/// nothing.
///
/// # Examples
///
/// ```
/// use cancelctx::{Cause, Context, Error};
///
/// let (ctx, guard) = Context::background().with_cancel();
/// {
///     let (child, _child_guard) = ctx.with_cancel();
///     assert!(!child.is_done());
/// } // `_child_guard` dropped: the child is canceled and unregistered
/// assert_eq!(ctx.child_count(), 0);
///
/// guard.cancel_with_cause(Cause::msg("done early"));
/// guard.cancel(); // idempotent: the first cause wins
/// assert_eq!(ctx.err(), Some(Error::Canceled));
/// assert_eq!(ctx.cause().unwrap().to_string(), "done early");
/// ```
#[must_use = "dropping the guard cancels the context at once; bind it to `_guard` to keep the context for the scope"]
pub struct CancelGuard {
    node: Weak<CancelNode>,
}

impl CancelGuard {
    pub(crate) fn new(node: &Arc<CancelNode>) -> CancelGuard {
        CancelGuard {
            node: Arc::downgrade(node),
        }
    }

    /// Cancels the context and all its descendants with
    /// [`Error::Canceled`]; when this returns, every one of them is done.
    /// Does nothing if the context already ended.
    #[doc(alias = "CancelFunc")]
    pub fn cancel(&self) {
        if let Some(node) = self.node.upgrade() {
            node.cancel(Error::Canceled, None, End::Explicit);
        }
    }

    /// Like [`cancel`](CancelGuard::cancel), with `cause` reported by
    /// [`Context::cause`](crate::Context::cause) here and in every descendant.
    #[doc(alias = "CancelCauseFunc")]
    pub fn cancel_with_cause(&self, cause: impl Into<Cause>) {
        if let Some(node) = self.node.upgrade() {
            node.cancel(Error::Canceled, Some(cause.into()), End::Explicit);
        }
    }

    /// Gives the guard up without canceling: the context then ends with its
    /// parent or its deadline, and is released once nothing observes it.
    ///
    /// ```
    /// use cancelctx::Context;
    ///
    /// let (ctx, guard) = Context::background().with_cancel();
    /// guard.detach();
    /// assert!(!ctx.is_done());
    /// ```
    pub fn detach(mut self) {
        self.node = Weak::new();
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl fmt::Debug for CancelGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.node.upgrade() {
            None => "released",
            Some(node) if node.err().is_some() => "done",
            Some(_) => "live",
        };
        f.debug_struct("CancelGuard")
            .field("context", &state)
            .finish()
    }
}
