//! [`Group`]: Go's `errgroup` — members sharing a context that the first
//! failure cancels, driven by the group's own future ([`Wait`]) or run on
//! scoped threads ([`GroupScope`]).

mod admission;
mod members;
mod scope;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context as TaskContext, Poll};

use futures_core::future::FusedFuture;

use self::admission::Shared;
use self::members::{
    Outcome, Payload, Ready, Slots, caught, discard, drop_caught, drop_each, keep_first,
    panic_cause,
};
pub use self::scope::GroupScope;
use crate::context::Context;
use crate::error::Cause;

/// Members working on parts of one task, sharing a context that the first
/// failure cancels: Go's `errgroup.Group`, on every executor.
///
/// [`Group::new`] derives the group's [`context`](Group::context) from a
/// parent. [`spawn`](Group::spawn) adds async members;
/// [`wait`](Group::wait) drives them all concurrently inside the future it
/// returns (no executor spawn, so it works on every executor, and members may
/// borrow data that outlives the group: the `'a` in `Group<'a>`) until every
/// member has finished, then returns the first error. For members on threads,
/// use [`Group::scope`].
///
/// Members only make progress while [`Wait`] is polled, the way the futures
/// in a `FuturesUnordered` do. A [`Spawner`] adds members from anywhere,
/// including from inside a member. Members must be `Send`; data they borrow
/// must be declared before the group (the group drops its members last).
///
/// # Collecting results
///
/// Go's members write their results into variables of the caller; here a
/// member borrows them mutably, so the caller reads them once the group is
/// gone (an inner block, or `drop(group)`). A member cannot borrow the group
/// itself (`Group` is not `Sync`: `group.context()` inside a member fails to
/// compile with "`dyn Any + Send` cannot be shared between threads safely"):
/// clone the context into each member instead.
///
/// ```
/// use std::time::Duration;
/// use cancelctx::{Cause, Context, Group};
///
/// async fn fetch(ctx: &Context, what: &str) -> Result<String, Cause> {
///     ctx.sleep(Duration::from_millis(1)).await?;
///     Ok(what.to_uppercase())
/// }
///
/// let (request, _guard) = Context::background().with_timeout(Duration::from_secs(1));
/// let (mut user, mut orders) = (None, None); // declared before the group
/// let result = {
///     let mut group = Group::new(&request);
///     let (ctx, user) = (group.context().clone(), &mut user);
///     group.spawn(async move {
///         *user = Some(fetch(&ctx, "ada").await?);
///         Ok(())
///     });
///     let (ctx, orders) = (group.context().clone(), &mut orders);
///     group.spawn(async move {
///         *orders = Some(fetch(&ctx, "orders").await?);
///         Ok(())
///     });
///     futures::executor::block_on(group.wait())
/// }; // the group is dropped here: its borrows of `user` and `orders` end
/// result.unwrap();
/// assert_eq!((user.as_deref(), orders.as_deref()), (Some("ADA"), Some("ORDERS")));
/// ```
///
/// # Members run only inside `wait`
///
/// Unlike goroutines, members do not start when spawned: they are polled by
/// [`Wait`]. Code that awaits something a member produces *before* calling
/// `wait` (Go's pipeline pattern: a member feeds a channel the caller
/// reads) waits forever, or until the context ends. Drive both together,
/// e.g. `futures::join!(group.wait(), consume(rx))`, or make the consumer a
/// member too.
///
/// ```
/// use cancelctx::{Cause, Context, Group};
/// use futures::{SinkExt, StreamExt};
///
/// let mut group = Group::new(&Context::background());
/// let (mut tx, rx) = futures::channel::mpsc::channel::<u32>(1);
/// group.spawn(async move {
///     for n in 0..3 {
///         tx.send(n).await.map_err(Cause::new)?;
///     }
///     Ok(())
/// });
/// // Not `rx.collect().await` then `group.wait()`: nothing would send.
/// let (result, got) = futures::executor::block_on(async {
///     futures::join!(group.wait(), rx.collect::<Vec<_>>())
/// });
/// assert!(result.is_ok());
/// assert_eq!(got, [0, 1, 2]);
/// ```
///
/// # Errors and the group's context
///
/// Members return `Result<(), Cause>`: any `std::error::Error + Send + Sync +
/// 'static` converts with `?` or `.into()` (a `Box<dyn Error + Send + Sync>`
/// does not: use `.map_err(Cause::from_boxed)?`), and [`Cause::msg`] makes a
/// plain-text one. `?` turns the `Cause` that `wait` returns into a
/// `Box<dyn Error + Send + Sync>` for the caller. The first member to fail
/// cancels the group's context with its error as the
/// [cause](Context::cause) (the same [`Cause`]: `downcast_ref` finds the
/// member's error in both), and `wait` returns that error; later errors are
/// dropped. When `wait` completes, the context is canceled too (with
/// [`Error::Canceled`](crate::Error::Canceled) if nothing failed), as Go's
/// `WithContext` documents. Like Go's group, a `Group` can
/// be reused after `wait`: its first error is kept and later members see the
/// canceled context.
///
/// # Limit
///
/// [`set_limit`](Group::set_limit) bounds how many members run at once. A
/// member spawned beyond the limit is queued and starts, in spawn order, when
/// a running one finishes; [`try_spawn`](Group::try_spawn) refuses it
/// instead and hands it back.
///
/// # Panics
///
/// A member that panics is caught: the group's context is canceled with the
/// cause `"group member panicked: <message>"` (unless an earlier failure set
/// the cause), the other members keep running until they finish, and then
/// [`Wait`] resumes the first panic with its original payload
/// ([`std::panic::resume_unwind`]), so the waiter sees it as if it were its
/// own. A panic takes precedence over an error. (Go's errgroup crashes the
/// program; a Rust executor would swallow the panic or abort the task, so it
/// goes to whoever waits instead.) A panic in a member's `Drop` once it has
/// finished, or in the `Drop` of an error the group does not keep, counts as
/// that member's panic; members dropped together (a dropped [`Wait`] or
/// group) are dropped one at a time, and the first panic among their `Drop`s
/// is resumed once all are gone (unless the drop is itself part of an
/// unwinding). A panic from a waker that the group's cancel wakes (a waker
/// registered on the group's context) is resumed as well: by `Wait::poll`
/// once the round that canceled has done its bookkeeping (the first error is
/// kept for the next `wait`), or by the dropped `Wait` or group, in
/// preference to a member's.
///
/// # Dropping
///
/// Dropping the group drops its members in place and cancels its context.
///
/// # Examples
///
/// ```
/// use cancelctx::{Cause, Context, Group};
///
/// let mut group = Group::new(&Context::background());
/// for name in ["alpha", "beta", "missing"] {
///     let ctx = group.context().clone();
///     group.spawn(async move {
///         if name == "missing" {
///             return Err(Cause::msg(format!("{name}: not found")));
///         }
///         ctx.done().await; // the others stop once a member fails
///         Ok(())
///     });
/// }
/// let err = futures::executor::block_on(group.wait()).unwrap_err();
/// assert_eq!(err.to_string(), "missing: not found");
/// assert_eq!(group.context().cause().unwrap().to_string(), "missing: not found");
/// ```
#[doc(alias = "errgroup")]
pub struct Group<'a> {
    shared: Arc<Shared<'a>>,
    ctx: Context,
    slots: Slots<'a>,
    /// The indices to poll in one `Wait::poll`, kept for its allocation.
    batch: Vec<usize>,
    first_err: Option<Cause>,
    panic: Option<Payload>,
    /// A panic from a cancel (a waker it woke), resumed once the round that
    /// caught it has done its bookkeeping.
    resume: Option<Payload>,
}

impl<'a> Group<'a> {
    /// A group whose context is derived from `ctx`: canceled when a member
    /// fails, when [`wait`](Group::wait) completes, when the group is dropped,
    /// or when `ctx` ends. Go's `errgroup.WithContext`.
    ///
    /// ```
    /// use cancelctx::{Context, Group};
    ///
    /// let (parent, guard) = Context::background().with_cancel();
    /// let group = Group::new(&parent);
    /// drop(guard);
    /// assert!(group.context().is_done());
    /// ```
    #[doc(alias = "WithContext")]
    pub fn new(ctx: &Context) -> Group<'a> {
        let (ctx, guard) = ctx.with_cancel();
        let ready = Arc::new(Ready::new());
        let shared = Shared::new(guard, ready.clone());
        Group {
            shared: Arc::new(shared),
            ctx,
            slots: Slots::new(ready),
            batch: Vec::new(),
            first_err: None,
            panic: None,
            resume: None,
        }
    }

    /// The group's context: hand a clone to each member so it stops early
    /// once another member has failed.
    ///
    /// ```
    /// use cancelctx::{Context, Group};
    ///
    /// let group = Group::new(&Context::background());
    /// assert!(!group.context().is_done());
    /// ```
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Bounds how many members run at once; `None` removes the bound. Takes
    /// effect for members not yet started: raising it starts queued members
    /// at once, lowering it below the number running stops none of them.
    ///
    /// With a limit of 0 nothing starts: a [`Wait`] with a member queued
    /// pends until it is dropped (it borrows the group, so the limit cannot
    /// change meanwhile; [`Group::scope`]'s members can change theirs as they
    /// run). Unlike Go's `SetLimit`, changing the limit with members queued
    /// or started, between waits, is allowed.
    ///
    /// ```
    /// use cancelctx::{Cause, Context, Group};
    ///
    /// let group = Group::new(&Context::background());
    /// group.set_limit(1);
    /// assert!(group.try_spawn(async { Ok::<(), Cause>(()) }).is_ok());
    /// assert!(group.try_spawn(async { Ok::<(), Cause>(()) }).is_err()); // full
    /// group.set_limit(None);
    /// assert!(group.try_spawn(async { Ok::<(), Cause>(()) }).is_ok());
    /// ```
    #[doc(alias = "SetLimit")]
    pub fn set_limit(&self, limit: impl Into<Option<usize>>) {
        self.shared.set_limit(limit.into());
    }

    /// Adds a member. It starts when [`wait`](Group::wait) is next polled,
    /// or, if the group is at its [limit](Group::set_limit), waits its turn
    /// in a queue. Go's `Group.Go`, without blocking.
    ///
    /// ```
    /// use cancelctx::{Context, Group};
    ///
    /// let mut group = Group::new(&Context::background());
    /// let ctx = group.context().clone();
    /// group.spawn(async move {
    ///     ctx.sleep(std::time::Duration::from_millis(1)).await?;
    ///     Ok(())
    /// });
    /// assert!(futures::executor::block_on(group.wait()).is_ok());
    /// ```
    #[doc(alias = "Go")]
    pub fn spawn<F>(&self, member: F)
    where
        F: Future<Output = Result<(), Cause>> + Send + 'a,
    {
        self.shared.spawn(Box::pin(member));
    }

    /// Adds a member only if it can start now, without queueing: `Err`
    /// hands it back, unpolled, when the group is at its
    /// [limit](Group::set_limit). Go's `Group.TryGo`.
    ///
    /// ```
    /// use std::future::pending;
    /// use cancelctx::{Context, Group};
    ///
    /// let group = Group::new(&Context::background());
    /// group.set_limit(1);
    /// assert!(group.try_spawn(pending()).is_ok());
    /// let refused = group.try_spawn(async { Ok(()) });
    /// assert!(refused.is_err());
    /// ```
    #[doc(alias = "TryGo")]
    pub fn try_spawn<F>(&self, member: F) -> Result<(), F>
    where
        F: Future<Output = Result<(), Cause>> + Send + 'a,
    {
        self.shared.try_spawn(member)
    }

    /// A handle that adds members to this group from anywhere: from inside a
    /// member, from another thread, or while [`wait`](Group::wait) borrows
    /// the group.
    ///
    /// ```
    /// use cancelctx::{Context, Group};
    ///
    /// let mut group = Group::new(&Context::background());
    /// let spawner = group.spawner();
    /// group.spawn(async move {
    ///     spawner.spawn(async { Ok(()) }); // a member adding a member
    ///     Ok(())
    /// });
    /// assert!(futures::executor::block_on(group.wait()).is_ok());
    /// ```
    pub fn spawner(&self) -> Spawner<'a> {
        Spawner {
            shared: Arc::downgrade(&self.shared),
            ctx: self.ctx.clone(),
        }
    }

    /// Drives every member until all have finished, then cancels the group's
    /// context and returns the first error. Go's `Group.Wait`.
    ///
    /// See [`Wait`] for cancellation safety and panics. Waiting again later
    /// runs the members spawned since and returns the same first error.
    ///
    /// ```
    /// use cancelctx::{Cause, Context, Group};
    ///
    /// let mut group = Group::new(&Context::background());
    /// assert!(futures::executor::block_on(group.wait()).is_ok()); // no members
    /// group.spawn(async { Err(Cause::msg("first")) });
    /// group.spawn(async { Err(Cause::msg("second")) });
    /// let err = futures::executor::block_on(group.wait()).unwrap_err();
    /// assert_eq!(err.to_string(), "first");
    /// ```
    #[doc(alias = "Wait")]
    pub fn wait(&mut self) -> Wait<'_, 'a> {
        Wait {
            group: self,
            terminated: false,
        }
    }

    fn record(&mut self, outcome: Outcome) {
        match outcome {
            Ok(Ok(())) => {}
            // Recorded before the cancel: a waker it wakes may panic into
            // this poll, and the group must still report the first failure.
            Ok(Err(err)) => {
                if self.first_err.is_none() {
                    self.first_err = Some(err.clone());
                    self.cancel_with_cause(err);
                } else if let Some(payload) = drop_caught(err) {
                    // A later error whose `Drop` panics: the member's panic.
                    self.record(Err(payload));
                }
            }
            Err(payload) => {
                let cause = panic_cause("group member", &*payload);
                keep_first(&mut self.panic, payload);
                self.cancel_with_cause(cause);
            }
        }
    }

    /// Cancels the group's context; a panic from a waker it wakes is kept
    /// for the end of the round (`resume`).
    fn cancel_with_cause(&mut self, cause: Cause) {
        let guard = &self.shared.guard;
        if let Some(payload) = caught(|| guard.cancel_with_cause(cause)) {
            keep_first(&mut self.resume, payload);
        }
    }

    /// One round of the driver; `Ready` once every member has finished.
    fn poll_members(&mut self, cx: &mut TaskContext<'_>) -> Poll<()> {
        let mut batch = std::mem::take(&mut self.batch);
        self.shared.ready.take(cx.waker(), &mut batch);
        for member in self.shared.take_admitted() {
            batch.push(self.slots.insert(member));
        }
        let mut admitted = Vec::new();
        let mut i = 0;
        while let Some(&index) = batch.get(i) {
            i += 1;
            let Some((outcome, drop_panic)) = self.slots.poll(index) else {
                continue;
            };
            // Its place first: no user code runs between the member's end
            // and the release of its place.
            self.shared.finish_one(&mut admitted);
            for member in admitted.drain(..) {
                batch.push(self.slots.insert(member));
            }
            self.record(outcome);
            if let Some(payload) = drop_panic {
                self.record(Err(payload));
            }
        }
        batch.clear();
        self.batch = batch;
        if let Some(payload) = self.resume.take() {
            std::panic::resume_unwind(payload);
        }
        // A member admitted meanwhile woke the driver (see `Ready::take`).
        if self.slots.len() == 0 && self.shared.is_idle() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Drops every member, running or not, and cancels the context.
    fn abort(&mut self, close: bool) {
        // Everything taken out first, so the group is consistent whatever
        // the cancel (a waker it wakes) or a member's `Drop` does below.
        let running = self.slots.clear();
        let (admitted, queued) = self.shared.take_all(close);
        // Canceled before the members are dropped: their `Drop` sees it.
        let guard = &self.shared.guard;
        let mut panicked = caught(|| guard.cancel());
        self.shared.ready.reset();
        if let Some(dropped) = drop_each(running.into_iter().chain(admitted).chain(queued)) {
            keep_first(&mut panicked, dropped);
        }
        if let Some(payload) = panicked {
            // Resumed only outside an unwinding (a `Wait` or group dropped by
            // one): a panic there would abort the process.
            if std::thread::panicking() {
                discard(payload);
            } else {
                std::panic::resume_unwind(payload);
            }
        }
    }
}

impl Default for Group<'_> {
    /// A group under [`Context::background`]: Go's zero `errgroup.Group`.
    fn default() -> Self {
        Group::new(&Context::background())
    }
}

impl Drop for Group<'_> {
    fn drop(&mut self) {
        self.abort(true);
    }
}

impl fmt::Debug for Group<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (limit, admitted, queued) = self.shared.counts();
        f.debug_struct("Group")
            .field("context", &self.ctx)
            .field("limit", &limit)
            .field("running", &self.slots.len())
            .field("admitted", &admitted)
            .field("queued", &queued)
            .field("first_err", &self.first_err)
            .field("panicked", &self.panic.is_some())
            .finish()
    }
}

/// A handle that adds members to a [`Group`], from [`Group::spawner`]:
/// `Clone + Send + Sync`, usable from inside members and other threads.
///
/// It does not keep the group alive: once the group is dropped,
/// [`spawn`](Spawner::spawn) drops its member unpolled and
/// [`try_spawn`](Spawner::try_spawn) hands it back.
///
/// # Examples
///
/// ```
/// use cancelctx::{Context, Group};
///
/// let mut group = Group::new(&Context::background());
/// let spawner = group.spawner();
/// std::thread::spawn(move || spawner.spawn(async { Ok(()) })).join().unwrap();
/// assert!(futures::executor::block_on(group.wait()).is_ok());
/// ```
#[derive(Clone)]
pub struct Spawner<'a> {
    shared: Weak<Shared<'a>>,
    ctx: Context,
}

impl<'a> Spawner<'a> {
    /// The group's context, as [`Group::context`].
    ///
    /// ```
    /// use cancelctx::{Context, Group};
    ///
    /// let group = Group::new(&Context::background());
    /// assert!(!group.spawner().context().is_done());
    /// ```
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// [`Group::spawn`]; drops `member` unpolled if the group is gone.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use cancelctx::{Context, Group};
    ///
    /// let ran = AtomicBool::new(false);
    /// let mut group = Group::new(&Context::background());
    /// group.spawner().spawn(async { ran.store(true, Ordering::Relaxed); Ok(()) });
    /// futures::executor::block_on(group.wait()).unwrap();
    /// assert!(ran.load(Ordering::Relaxed));
    /// ```
    #[doc(alias = "Go")]
    pub fn spawn<F>(&self, member: F)
    where
        F: Future<Output = Result<(), Cause>> + Send + 'a,
    {
        if let Some(shared) = self.shared.upgrade() {
            shared.spawn(Box::pin(member));
        }
    }

    /// [`Group::try_spawn`]; also hands `member` back if the group is gone.
    ///
    /// ```
    /// use cancelctx::{Context, Group};
    ///
    /// let group = Group::new(&Context::background());
    /// let spawner = group.spawner();
    /// assert!(spawner.try_spawn(async { Ok(()) }).is_ok());
    /// drop(group);
    /// assert!(spawner.try_spawn(async { Ok(()) }).is_err());
    /// ```
    #[doc(alias = "TryGo")]
    pub fn try_spawn<F>(&self, member: F) -> Result<(), F>
    where
        F: Future<Output = Result<(), Cause>> + Send + 'a,
    {
        match self.shared.upgrade() {
            Some(shared) => shared.try_spawn(member),
            None => Err(member),
        }
    }
}

impl fmt::Debug for Spawner<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spawner")
            .field("context", &self.ctx)
            .field("group_alive", &(self.shared.strong_count() > 0))
            .finish()
    }
}

/// Future returned by [`Group::wait`]: drives every member concurrently and
/// resolves, once all have finished, to the first member's error (`Ok(())`
/// if none failed). The group's context is canceled when it resolves.
///
/// It polls the members itself, inside the task that polls it, each with its
/// own waker, so only members that were woken are polled again; a round
/// polls each woken member once, then yields.
///
/// # Cancellation safety
///
/// Not cancellation safe: dropping a `Wait` before it resolves drops every
/// member still running or queued, in place, and cancels the group's context
/// (with [`Error::Canceled`](crate::Error::Canceled), unless a member's
/// failure set the cause first). The group stays usable: its first error is
/// kept, and members spawned later run on the next `wait`, under the canceled
/// context.
///
/// # Panics
///
/// When a member panicked, polling resumes the first panic, with its original
/// payload, once every other member has finished. Panics if polled after it
/// resolved.
///
/// # Examples
///
/// ```
/// use std::panic::{AssertUnwindSafe, catch_unwind};
/// use cancelctx::{Context, Group};
///
/// let mut group = Group::new(&Context::background());
/// group.spawn(async { panic!("member bug") });
/// let caught = catch_unwind(AssertUnwindSafe(|| futures::executor::block_on(group.wait())));
/// assert_eq!(*caught.unwrap_err().downcast::<&str>().unwrap(), "member bug");
/// let cause = group.context().cause().unwrap();
/// assert_eq!(cause.to_string(), "group member panicked: member bug");
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct Wait<'g, 'a> {
    group: &'g mut Group<'a>,
    terminated: bool,
}

impl Future for Wait<'_, '_> {
    type Output = Result<(), Cause>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        assert!(!self.terminated, "`Wait` polled after completion");
        std::task::ready!(self.group.poll_members(cx));
        self.terminated = true;
        let group = &mut *self.group;
        // No member is left to wake the driver: keep no task alive.
        group.shared.ready.reset();
        group.shared.guard.cancel();
        if let Some(payload) = group.panic.take() {
            std::panic::resume_unwind(payload);
        }
        Poll::Ready(group.first_err.clone().map_or(Ok(()), Err))
    }
}

impl FusedFuture for Wait<'_, '_> {
    fn is_terminated(&self) -> bool {
        self.terminated
    }
}

impl Drop for Wait<'_, '_> {
    fn drop(&mut self) {
        if !self.terminated {
            self.group.abort(false);
        }
    }
}

impl fmt::Debug for Wait<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wait")
            .field("group", &self.group)
            .field("terminated", &self.terminated)
            .finish()
    }
}
