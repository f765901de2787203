//! The [`Context`] handle: deriving, observing and naming contexts.

use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[cfg(all(test, loom))]
use cancelctx_timer::Timer;

use crate::error::{Cause, Error};
use crate::expiry;
use crate::guard::CancelGuard;
use crate::link::{self, DynLink, LinkKind, TypeBits};
use crate::node::{self, CancelNode};

/// A cancellation signal, a deadline and request-scoped values, carried down
/// a call tree: Go's `context.Context`.
///
/// A `Context` is a cheap handle (`Clone` is one atomic increment) that works
/// unchanged on every executor and on plain threads. Derive children with
/// [`with_cancel`](Context::with_cancel), [`with_timeout`](Context::with_timeout),
/// [`with_deadline`](Context::with_deadline) and
/// [`with_value`](Context::with_value); each cancelable child comes with a
/// [`CancelGuard`] that cancels it when dropped.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use cancelctx::{Context, Error};
///
/// let root = Context::background();
/// let (ctx, _guard) = root.with_timeout(Duration::from_millis(10));
/// // ... hand `ctx` to work on any thread or executor ...
/// assert_eq!(ctx.wait_done(), Error::DeadlineExceeded);
/// assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
/// ```
#[derive(Clone)]
pub struct Context {
    repr: Repr,
}

#[derive(Clone)]
enum Repr {
    Background,
    Todo,
    Cancel(Arc<CancelNode>),
    Link(Arc<DynLink>),
}

impl Context {
    /// The root of every context tree: never canceled, no deadline, no values.
    /// Free to create.
    #[doc(alias = "Background")]
    pub fn background() -> Context {
        Context {
            repr: Repr::Background,
        }
    }

    /// A root like [`background`](Context::background), for code that does
    /// not know yet which context to use; it only differs in `Display`.
    #[doc(alias = "TODO")]
    pub fn todo() -> Context {
        Context { repr: Repr::Todo }
    }

    /// A child that is canceled when the returned guard is used or dropped, or
    /// when this context is canceled, whichever comes first.
    ///
    /// One heap allocation. If `self` is already done, the child is done at
    /// construction with the same error and cause.
    ///
    /// ```
    /// use cancelctx::{Context, Error};
    ///
    /// let (parent, parent_guard) = Context::background().with_cancel();
    /// let (child, _child_guard) = parent.with_cancel();
    /// drop(parent_guard);
    /// assert_eq!(child.err(), Some(Error::Canceled));
    /// ```
    ///
    /// # Keep the guard in a named binding
    ///
    /// The guard is Go's `cancel` with `defer` built in, so it must live as
    /// long as the context is in use. Each of these compiles without a
    /// warning and gives a context that is **already canceled**:
    ///
    /// ```
    /// use std::time::Duration;
    /// use cancelctx::{Context, Error};
    ///
    /// let parent = Context::background();
    /// let (ctx, _) = parent.with_cancel(); // `_` drops the guard at once
    /// assert_eq!(ctx.err(), Some(Error::Canceled));
    /// let ctx = parent.with_timeout(Duration::from_secs(5)).0; // so does `.0`
    /// assert_eq!(ctx.err(), Some(Error::Canceled));
    /// let ctx = {
    ///     let (ctx, _guard) = parent.with_cancel();
    ///     ctx
    /// }; // the guard stayed in the block
    /// assert_eq!(ctx.err(), Some(Error::Canceled));
    /// ```
    ///
    /// Bind it to `_guard` (not `_`); to hand the context out of the scope
    /// that made it, return the guard with it (`-> (Context, CancelGuard)`),
    /// or [`detach`](CancelGuard::detach) it. Go's `cancel()` is
    /// `guard.cancel()`; `ctx.cancel()` does not exist.
    #[doc(alias = "WithCancel")]
    #[doc(alias = "WithCancelCause")]
    #[doc(alias = "child_token")]
    pub fn with_cancel(&self) -> (Context, CancelGuard) {
        self.derive(None, None, None)
    }

    /// A child whose deadline is `timeout` from now: [`with_deadline`]
    /// (`Instant::now() + timeout`).
    ///
    /// Keep the guard in a named binding (`_guard`, not `_`): see
    /// [`with_cancel`](Context::with_cancel) ("Keep the guard in a named binding").
    ///
    /// A zero timeout gives a context that is already done with
    /// [`Error::DeadlineExceeded`]. A timeout so large that the deadline does
    /// not fit in an [`Instant`] (such as [`Duration::MAX`]) saturates to
    /// "never": the child then has no deadline of its own.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cancelctx::{Context, Error};
    ///
    /// let (ctx, _guard) = Context::background().with_timeout(Duration::ZERO);
    /// assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    /// let (ctx, _guard) = Context::background().with_timeout(Duration::MAX);
    /// assert_eq!(ctx.deadline(), None);
    /// ```
    ///
    /// [`with_deadline`]: Context::with_deadline
    #[doc(alias = "WithTimeout")]
    pub fn with_timeout(&self, timeout: Duration) -> (Context, CancelGuard) {
        let now = Instant::now();
        self.derive(now.checked_add(timeout), None, Some(now))
    }

    /// A child that ends with [`Error::DeadlineExceeded`] at `deadline`, is
    /// canceled by its guard, or ends with this context, whichever comes first.
    ///
    /// The deadline is driven by the crate's timer thread, not by any
    /// executor: it fires on time even when every executor thread is busy.
    /// A deadline later than this context's is not armed: the child reports
    /// the parent's (Go does the same). A deadline that has passed gives a
    /// child that is done at construction.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use cancelctx::Context;
    ///
    /// let soon = Instant::now() + Duration::from_secs(1);
    /// let (parent, _g1) = Context::background().with_deadline(soon);
    /// let (child, _g2) = parent.with_deadline(soon + Duration::from_secs(60));
    /// assert_eq!(child.deadline(), Some(soon));
    /// ```
    #[doc(alias = "WithDeadline")]
    pub fn with_deadline(&self, deadline: Instant) -> (Context, CancelGuard) {
        self.derive(Some(deadline), None, None)
    }

    /// [`with_timeout`](Context::with_timeout) whose expiry reports `cause`
    /// from [`cause`](Context::cause) (the error stays
    /// [`Error::DeadlineExceeded`]). Canceling through the guard still reports
    /// [`Error::Canceled`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use cancelctx::{Cause, Context, Error};
    ///
    /// let (ctx, _guard) = Context::background()
    ///     .with_timeout_cause(Duration::ZERO, Cause::msg("backend too slow"));
    /// assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    /// assert_eq!(ctx.cause().unwrap().to_string(), "backend too slow");
    /// ```
    #[doc(alias = "WithTimeoutCause")]
    pub fn with_timeout_cause(
        &self,
        timeout: Duration,
        cause: impl Into<Cause>,
    ) -> (Context, CancelGuard) {
        let now = Instant::now();
        self.derive(now.checked_add(timeout), Some(cause.into()), Some(now))
    }

    /// [`with_deadline`](Context::with_deadline) whose expiry reports `cause`.
    #[doc(alias = "WithDeadlineCause")]
    pub fn with_deadline_cause(
        &self,
        deadline: Instant,
        cause: impl Into<Cause>,
    ) -> (Context, CancelGuard) {
        self.derive(Some(deadline), Some(cause.into()), None)
    }

    fn derive(
        &self,
        deadline: Option<Instant>,
        cause: Option<Cause>,
        now: Option<Instant>,
    ) -> (Context, CancelGuard) {
        let node = CancelNode::new(self, deadline, cause, now, None);
        let guard = CancelGuard::new(&node);
        (
            Context {
                repr: Repr::Cancel(node),
            },
            guard,
        )
    }

    /// Like [`with_deadline`](Context::with_deadline) on a timer of the
    /// caller's choice (the loom models use a manual timer).
    #[cfg(all(test, loom))]
    pub(crate) fn with_deadline_on(
        &self,
        deadline: Instant,
        timer: &Timer,
    ) -> (Context, CancelGuard) {
        let node = CancelNode::new(self, Some(deadline), None, None, Some(timer));
        let guard = CancelGuard::new(&node);
        (
            Context {
                repr: Repr::Cancel(node),
            },
            guard,
        )
    }

    /// A child carrying `value`, found by [`value::<T>`](Context::value) here
    /// and in every descendant until a nearer value of the same type.
    ///
    /// Values are keyed by type: define a small newtype per key, as Go code
    /// defines an unexported key type. One heap allocation.
    ///
    /// The type is the key exactly as the compiler infers it, so bare
    /// literals and std types miss silently: `with_value(42)` stores an
    /// `i32` (`value::<u64>()` finds nothing), `with_value("id")` a
    /// `&'static str` (`value::<String>()` finds nothing), and two unrelated
    /// crates storing a `String` shadow each other's.
    ///
    /// ```
    /// use cancelctx::Context;
    ///
    /// let ctx = Context::background().with_value(42);
    /// assert!(ctx.value::<u64>().is_none());
    /// assert_eq!(ctx.value::<i32>(), Some(&42));
    /// ```
    ///
    /// ```
    /// use cancelctx::Context;
    ///
    /// struct RequestId(u64);
    /// let ctx = Context::background().with_value(RequestId(7));
    /// let (child, _guard) = ctx.with_cancel();
    /// assert_eq!(child.value::<RequestId>().map(|id| id.0), Some(7));
    /// assert!(child.value::<String>().is_none());
    /// ```
    #[doc(alias = "WithValue")]
    #[must_use = "`with_value` returns a new context and leaves this one unchanged"]
    pub fn with_value<T: Send + Sync + 'static>(&self, value: T) -> Context {
        Context {
            repr: Repr::Link(link::value(self, value)),
        }
    }

    /// A child carrying a name, shown by `Display` and in reports: the name of
    /// this context and of every context derived from it until a nearer name.
    ///
    /// Name a context before deriving the cancelable context it describes:
    /// `parent.named("db-query").with_timeout(d)`. One heap allocation
    /// (none for the name itself when it is a `&'static str`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use cancelctx::Context;
    ///
    /// let (ctx, _guard) = Context::background().named("db-query").with_timeout(Duration::from_secs(1));
    /// assert_eq!(ctx.name(), Some("db-query"));
    /// assert!(ctx.to_string().starts_with("context.Background.Named(db-query).WithDeadline("));
    /// ```
    #[must_use = "`named` returns a new context and leaves this one unchanged"]
    pub fn named(&self, name: impl Into<Cow<'static, str>>) -> Context {
        Context {
            repr: Repr::Link(link::named(self, name.into())),
        }
    }

    /// The nearest name on this context's chain (see
    /// [`named`](Context::named)).
    pub fn name(&self) -> Option<&str> {
        let mut ctx = self;
        loop {
            ctx = match &ctx.repr {
                Repr::Link(link) => {
                    if let LinkKind::Named = link.kind {
                        let name = (&link.value as &dyn Any).downcast_ref::<Cow<'static, str>>();
                        return name.map(|n| &**n);
                    }
                    &link.parent
                }
                Repr::Cancel(node) => &node.parent,
                Repr::Background | Repr::Todo => return None,
            };
        }
    }

    /// For the `tracing` hook and the registry's listing: the nearest
    /// `named` link at or above this context, looked for no further up than
    /// the nearest cancelable context on its chain (through `without_cancel`
    /// links, unlike [`scope`](Context::scope)), and that cancelable context
    /// (`None` at a root). Without a link here, this context's name is that
    /// context's: walking one segment per context keeps a deep chain linear.
    #[cfg(any(feature = "tracing", feature = "registry"))]
    pub(crate) fn segment(&self) -> (Option<&Context>, Option<&Arc<CancelNode>>) {
        let mut named = None;
        let mut ctx = self;
        loop {
            ctx = match &ctx.repr {
                Repr::Link(link) => {
                    if named.is_none() && matches!(link.kind, LinkKind::Named) {
                        named = Some(ctx);
                    }
                    &link.parent
                }
                Repr::Cancel(node) => return (named, Some(node)),
                Repr::Background | Repr::Todo => return (named, None),
            };
        }
    }

    /// For the `tracing` hook: the nearest `named` link at or above this
    /// context (its [`name`](Context::name) is this context's).
    #[cfg(feature = "tracing")]
    pub(crate) fn named_link(&self) -> Option<Context> {
        let mut ctx = self;
        loop {
            match ctx.segment() {
                (Some(link), _) => return Some(link.clone()),
                (None, Some(node)) => ctx = &node.parent,
                (None, None) => return None,
            }
        }
    }

    /// A child that keeps this context's values but is never canceled and has
    /// no deadline: for work that must finish even when the request that
    /// started it ends (an audit log write, say).
    ///
    /// It holds this context (for the values and its `Display`), as Go's
    /// does: while it lives, so does this context, and a detached one keeps
    /// its place in its parent and its timer entry until it ends.
    ///
    /// ```
    /// use cancelctx::Context;
    ///
    /// struct User(&'static str);
    /// let (ctx, guard) = Context::background().with_value(User("ada")).with_cancel();
    /// let detached = ctx.without_cancel();
    /// drop(guard);
    /// assert!(ctx.is_done());
    /// assert!(!detached.is_done());
    /// assert_eq!(detached.value::<User>().unwrap().0, "ada");
    /// ```
    #[doc(alias = "WithoutCancel")]
    #[must_use = "`without_cancel` returns a new context and leaves this one unchanged"]
    pub fn without_cancel(&self) -> Context {
        Context {
            repr: Repr::Link(link::without_cancel(self)),
        }
    }

    /// Why this context is done: `None` while it is live, then
    /// [`Error::Canceled`] or [`Error::DeadlineExceeded`] forever after.
    ///
    /// An atomic load; never allocates. On a live context with a deadline,
    /// the calling thread also compares the deadline with its latest clock
    /// reading (renewed once every 16 such checks, whichever contexts they
    /// are on) and, if the deadline has passed, ends the context itself rather than
    /// wait for the timer thread (which may not have a CPU yet): a loop that
    /// polls `err()` or [`is_done`](Context::is_done) sees its deadline
    /// within 16 checks of it, even when every core is busy. Never
    /// before the deadline. That check then does what a cancel does (it may
    /// allocate, wake waiters, and wait for a cancel of the same subtree
    /// running on another thread to finish): see
    /// [the crate docs](crate#when-a-deadline-is-seen).
    #[doc(alias = "Err")]
    #[inline]
    pub fn err(&self) -> Option<Error> {
        expiry::observe(self.scope()?)
    }

    /// The cause this context ended with: `None` while live; the cause given
    /// to [`CancelGuard::cancel_with_cause`] or a `*_cause` constructor, or
    /// else the [`Error`] itself. The first cancellation's cause wins and
    /// descendants inherit it.
    ///
    /// ```
    /// use cancelctx::{Cause, Context, Error};
    ///
    /// let (parent, guard) = Context::background().with_cancel();
    /// let (child, _g) = parent.with_cancel();
    /// guard.cancel_with_cause(Cause::msg("shutting down"));
    /// assert_eq!(child.cause().unwrap().to_string(), "shutting down");
    /// ```
    #[doc(alias = "Cause")]
    pub fn cause(&self) -> Option<Cause> {
        let node = self.scope()?;
        expiry::observe(node)?;
        node.cause()
    }

    /// Whether this context is done (`err().is_some()`): the check for
    /// cooperative cancellation inside CPU-bound loops. An atomic load, plus
    /// a clock read every 16 checks of a live context with a deadline (see
    /// [`err`](Context::err)).
    #[doc(alias = "is_cancelled")]
    #[inline]
    pub fn is_done(&self) -> bool {
        self.err().is_some()
    }

    /// When this context will end with [`Error::DeadlineExceeded`]: the
    /// earliest deadline on its chain, if any.
    #[doc(alias = "Deadline")]
    #[inline]
    pub fn deadline(&self) -> Option<Instant> {
        self.scope()?.deadline
    }

    /// Time left until [`deadline`](Context::deadline): `None` without a
    /// deadline, `Some(Duration::ZERO)` once it has passed (and then the
    /// context is done: a caller that finds the deadline passed ends the
    /// context if the timer thread has not yet).
    ///
    /// ```
    /// use std::time::Duration;
    /// use cancelctx::Context;
    ///
    /// assert_eq!(Context::background().remaining(), None);
    /// let (ctx, _g) = Context::background().with_timeout(Duration::from_secs(60));
    /// assert!(ctx.remaining().unwrap() <= Duration::from_secs(60));
    /// ```
    pub fn remaining(&self) -> Option<Duration> {
        let node = self.scope()?;
        let deadline = node.deadline?;
        let now = Instant::now();
        expiry::expire_if_passed(node, now);
        Some(deadline.saturating_duration_since(now))
    }

    /// The nearest value of type `T` on this context's chain.
    ///
    /// The lookup walks the chain iteratively (no recursion), skipping
    /// cancelable links. A miss is usually cheap: every value link carries a
    /// 64-bit summary of the value types between it and the nearest
    /// cancelable ancestor, so a type that is not there is ruled out at the
    /// first link of each such segment (below
    /// [`without_cancel`](Context::without_cancel), lookups walk).
    #[doc(alias = "Value")]
    pub fn value<T: Send + Sync + 'static>(&self) -> Option<&T> {
        let wanted = std::any::TypeId::of::<T>();
        let bit = TypeBits::of(wanted);
        let mut ctx = self;
        loop {
            ctx = match &ctx.repr {
                Repr::Link(link) => {
                    if !link.types.may_contain(bit) {
                        // Not on this segment: skip to above its scope.
                        match &link.scope {
                            Some(scope) => &scope.parent,
                            None => return None,
                        }
                    } else {
                        if let LinkKind::Value { type_id, .. } = link.kind {
                            if type_id == wanted {
                                return (&link.value as &dyn Any).downcast_ref::<T>();
                            }
                        }
                        &link.parent
                    }
                }
                Repr::Cancel(node) => &node.parent,
                Repr::Background | Repr::Todo => return None,
            };
        }
    }

    /// How many cancelable children and pending
    /// [`after_func`](Context::after_func) registrations this context's
    /// cancellation scope holds now: a diagnostic for leaks.
    ///
    /// A child leaves the count as soon as it is canceled, or dropped with
    /// nothing left to observe it. For a value or `without_cancel` context
    /// the count is that of its nearest cancelable ancestor (or 0).
    ///
    /// ```
    /// use cancelctx::Context;
    ///
    /// let (parent, _g) = Context::background().with_cancel();
    /// let (child, guard) = parent.with_cancel();
    /// assert_eq!(parent.child_count(), 1);
    /// drop(guard);
    /// assert_eq!(parent.child_count(), 0);
    /// # drop(child);
    /// ```
    pub fn child_count(&self) -> usize {
        self.scope().map_or(0, |node| node.child_count())
    }

    /// The nearest cancelable context on the chain, this one included.
    #[inline]
    pub(crate) fn scope(&self) -> Option<&Arc<CancelNode>> {
        match &self.repr {
            Repr::Cancel(node) => Some(node),
            Repr::Link(link) => link.scope.as_ref(),
            Repr::Background | Repr::Todo => None,
        }
    }

    /// For [`node::unlink_chain`]: the parent, if this was the last reference.
    pub(crate) fn take_parent_if_unique(self) -> Option<Context> {
        match self.repr {
            Repr::Cancel(node) => node::take_parent(node),
            Repr::Link(link) => link::take_parent(link),
            Repr::Background | Repr::Todo => None,
        }
    }

    /// The link this context is, if it is one.
    #[inline]
    pub(crate) fn link(&self) -> Option<&DynLink> {
        match &self.repr {
            Repr::Link(link) => Some(link),
            _ => None,
        }
    }

    fn parent(&self) -> Option<&Context> {
        match &self.repr {
            Repr::Cancel(node) => Some(&node.parent),
            Repr::Link(link) => Some(&link.parent),
            Repr::Background | Repr::Todo => None,
        }
    }

    /// This link's part of the `Display` name.
    fn write_segment(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Background => f.write_str("context.Background"),
            Repr::Todo => f.write_str("context.TODO"),
            Repr::Cancel(node) if node.own_deadline => {
                let deadline = node.deadline.expect("own deadline");
                let now = Instant::now();
                if deadline > now {
                    write!(f, ".WithDeadline(in {:?})", deadline - now)
                } else {
                    write!(f, ".WithDeadline(passed {:?} ago)", now - deadline)
                }
            }
            Repr::Cancel(_) => f.write_str(".WithCancel"),
            Repr::Link(link) => match link.kind {
                LinkKind::Value { type_name, .. } => write!(f, ".WithValue({type_name}, ..)"),
                LinkKind::WithoutCancel => f.write_str(".WithoutCancel"),
                LinkKind::Named => {
                    match (&link.value as &dyn Any).downcast_ref::<Cow<'static, str>>() {
                        Some(name) => write!(f, ".Named({name})"),
                        None => f.write_str(".Named"),
                    }
                }
            },
        }
    }
}

impl Default for Context {
    /// [`Context::background`].
    fn default() -> Context {
        Context::background()
    }
}

/// Names the chain the way Go's `String()` does, root first:
/// `context.Background.WithCancel.WithValue(my::Key, ..)`.
impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chain = Vec::new();
        let mut ctx = Some(self);
        while let Some(c) = ctx {
            chain.push(c);
            ctx = c.parent();
        }
        for c in chain.iter().rev() {
            c.write_segment(f)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Context {
    /// Reads the state as it is: unlike [`err`](Context::err) and
    /// [`remaining`](Context::remaining), formatting never ends a context
    /// whose deadline has passed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let now = Instant::now();
        f.debug_struct("Context")
            .field("name", &format_args!("{self}"))
            .field("err", &self.scope().and_then(|node| node.err()))
            .field(
                "remaining",
                &self.deadline().map(|d| d.saturating_duration_since(now)),
            )
            .field("child_count", &self.child_count())
            .finish()
    }
}
