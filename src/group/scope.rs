//! [`Group::scope`] and [`GroupScope`]: group members on scoped threads,
//! waited for by blocking.
//!
//! Lock order: the state lock is never held while canceling the context,
//! notifying `changed`, or running or dropping user code (a member, a panic
//! payload).

use std::any::Any;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::thread;

use super::Group;
use super::members::{Outcome, discard, drop_caught, panic_cause};
use crate::context::Context;
use crate::error::Cause;
use crate::guard::CancelGuard;
use crate::sync::{Condvar, Mutex};

/// The members of a [`Group::scope`], each on its own scoped thread: Go's
/// `errgroup.Group` with goroutines as threads.
///
/// Given to the closure of [`Group::scope`]; clone it to add members from
/// inside members. [`spawn`](GroupScope::spawn) blocks while the group is at
/// its [limit](GroupScope::set_limit), as Go's `Go` does.
///
/// Errors, the group's context and panics behave as in [`Group`]: the first
/// failure cancels the context with its error (or, for a panic, the message
/// `"group member panicked: <message>"`) as the cause; [`wait`] and the end
/// of [`Group::scope`] return the first error, or resume the first member
/// panic once every member has finished.
///
/// [`wait`]: GroupScope::wait
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use cancelctx::{Context, Group};
///
/// let sum = AtomicUsize::new(0);
/// let result = Group::scope(&Context::background(), |s| {
///     s.set_limit(2);
///     for n in 1..=4 {
///         let sum = &sum; // members may borrow from outside the scope
///         s.spawn(move |_ctx| {
///             sum.fetch_add(n, Ordering::Relaxed);
///             Ok(())
///         });
///     }
/// });
/// assert!(result.is_ok());
/// assert_eq!(sum.into_inner(), 10);
/// ```
#[derive(Clone)]
pub struct GroupScope<'scope, 'env> {
    scope: &'scope thread::Scope<'scope, 'env>,
    shared: Arc<Shared>,
}

struct Shared {
    ctx: Context,
    guard: CancelGuard,
    state: Mutex<State>,
    /// Notified (every waiter) when a member ends or the limit changes.
    changed: Condvar,
}

struct State {
    limit: Option<usize>,
    /// Members started and not finished.
    active: usize,
    /// A member failed (error or panic): only the first one cancels, so the
    /// context's cause and the first error agree.
    failed: bool,
    first_err: Option<Cause>,
    panic: Option<Box<dyn Any + Send>>,
}

impl Shared {
    fn try_acquire(&self) -> bool {
        let mut state = self.state.lock();
        if state.limit.is_none_or(|limit| state.active < limit) {
            state.active += 1;
            true
        } else {
            false
        }
    }

    /// Blocks until a place is free and takes it.
    fn acquire(&self) {
        let mut state = self.state.lock();
        while state.limit.is_some_and(|limit| state.active >= limit) {
            state = self.changed.wait(state);
        }
        state.active += 1;
    }

    fn release(&self) {
        self.state.lock().active -= 1;
        self.changed.notify_all();
    }

    /// Records how a member ended, cancels on its failure, then releases its
    /// place: canceling first means a waiter never sees the group finished
    /// before its context carries the cause. The place is released even if
    /// the cancel (a waker it wakes) panics. Values not kept (a later error,
    /// a later panic payload) are dropped outside the state lock; a panic
    /// from a later error's `Drop` is the member's panic, one from a later
    /// payload's is contained.
    fn finish(&self, outcome: Outcome) {
        struct Release<'a>(&'a Shared);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.release();
            }
        }
        let _release = Release(self);
        let mut next = Some(outcome);
        while let Some(outcome) = next.take() {
            let (cancel_with, unused_err, unused_payload) = {
                let mut state = self.state.lock();
                let first_failure = !state.failed;
                match outcome {
                    Ok(Ok(())) => (None, None, None),
                    Ok(Err(err)) => {
                        state.failed = true;
                        if state.first_err.is_none() {
                            state.first_err = Some(err.clone());
                        }
                        if first_failure {
                            (Some(err), None, None)
                        } else {
                            (None, Some(err), None)
                        }
                    }
                    Err(payload) => {
                        state.failed = true;
                        let cause = first_failure.then(|| panic_cause("group member", &*payload));
                        match state.panic {
                            None => {
                                state.panic = Some(payload);
                                (cause, None, None)
                            }
                            Some(_) => (cause, None, Some(payload)),
                        }
                    }
                }
            };
            if let Some(payload) = unused_payload {
                discard(payload);
            }
            if let Some(err) = unused_err {
                next = drop_caught(err).map(Err);
            }
            if let Some(cause) = cancel_with {
                self.guard.cancel_with_cause(cause);
            }
        }
    }

    fn wait(&self) -> Result<(), Cause> {
        let mut state = self.state.lock();
        while state.active != 0 {
            state = self.changed.wait(state);
        }
        drop(state);
        self.guard.cancel();
        let (panic, first_err) = {
            let mut state = self.state.lock();
            (state.panic.take(), state.first_err.clone())
        };
        if let Some(payload) = panic {
            panic::resume_unwind(payload);
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Group<'_> {
    /// Runs `f` with a [`GroupScope`] whose members run on scoped threads,
    /// then blocks until every member has finished: `Ok` with `f`'s value,
    /// or the first member's error. Go's `errgroup.WithContext` followed by
    /// `Wait`, with [`std::thread::scope`]'s borrowing: members may borrow
    /// anything that outlives the call.
    ///
    /// The group's context is derived from `ctx` and canceled by the first
    /// failure, by [`GroupScope::wait`], and when this returns.
    ///
    /// # Blocking
    ///
    /// Blocks the calling thread until every member has finished. Never call
    /// this from async code; use [`Group`] and [`Group::wait`] there.
    ///
    /// # Panics
    ///
    /// Resumes the first member panic once every member has finished. If `f`
    /// itself panics, the group's context is canceled (cause
    /// `"group scope body panicked: <message>"`) and the panic resumes once
    /// every member has finished. Panics if the OS fails to start a thread.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use cancelctx::{Cause, Context, Error, Group};
    ///
    /// let result = Group::scope(&Context::background(), |s| {
    ///     s.spawn(|ctx| {
    ///         // Blocks until the other member fails and cancels the group.
    ///         assert_eq!(ctx.wait_done(), Error::Canceled);
    ///         Ok(())
    ///     });
    ///     s.spawn(|_ctx| Err(Cause::msg("disk full")));
    ///     "body done"
    /// });
    /// assert_eq!(result.unwrap_err().to_string(), "disk full");
    /// ```
    pub fn scope<'env, F, R>(ctx: &Context, f: F) -> Result<R, Cause>
    where
        F: for<'scope> FnOnce(&GroupScope<'scope, 'env>) -> R,
    {
        let (ctx, guard) = ctx.with_cancel();
        let state = State {
            limit: None,
            active: 0,
            failed: false,
            first_err: None,
            panic: None,
        };
        let shared = Arc::new(Shared {
            ctx,
            guard,
            state: Mutex::new(state),
            changed: Condvar::new(),
        });
        let value = thread::scope(|scope| {
            let group = GroupScope {
                scope,
                shared: shared.clone(),
            };
            match panic::catch_unwind(AssertUnwindSafe(|| f(&group))) {
                Ok(value) => value,
                Err(payload) => {
                    let cause = panic_cause("group scope body", &*payload);
                    shared.guard.cancel_with_cause(cause);
                    // `thread::scope` joins every member, then resumes this.
                    panic::resume_unwind(payload)
                }
            }
        });
        shared.wait().map(|()| value)
    }
}

impl<'scope> GroupScope<'scope, '_> {
    /// The group's context: given to every member, canceled by the first
    /// failure.
    ///
    /// ```
    /// use cancelctx::{Context, Group};
    ///
    /// Group::scope(&Context::background(), |s| assert!(!s.context().is_done())).unwrap();
    /// ```
    pub fn context(&self) -> &Context {
        &self.shared.ctx
    }

    /// Bounds how many members run at once; `None` removes the bound.
    /// Raising it lets blocked [`spawn`](GroupScope::spawn) calls proceed.
    /// With a limit of 0, `spawn` blocks until the limit is raised.
    ///
    /// ```
    /// use cancelctx::{Context, Group};
    ///
    /// Group::scope(&Context::background(), |s| {
    ///     s.set_limit(0);
    ///     assert!(s.try_spawn(|_ctx| Ok(())).is_err());
    ///     s.set_limit(None);
    ///     assert!(s.try_spawn(|_ctx| Ok(())).is_ok());
    /// })
    /// .unwrap();
    /// ```
    #[doc(alias = "SetLimit")]
    pub fn set_limit(&self, limit: impl Into<Option<usize>>) {
        self.shared.state.lock().limit = limit.into();
        self.shared.changed.notify_all();
    }

    /// Runs `member` on a new scoped thread with the group's context. Go's
    /// `Group.Go`.
    ///
    /// # Blocking
    ///
    /// While the group is at its [limit](GroupScope::set_limit), blocks the
    /// calling thread until a member finishes. Never call this from async
    /// code.
    ///
    /// # Panics
    ///
    /// Panics if the OS fails to start a thread.
    ///
    /// ```
    /// use cancelctx::{Context, Group};
    ///
    /// let mut words = vec!["a", "b"];
    /// Group::scope(&Context::background(), |s| {
    ///     let words = &mut words;
    ///     s.spawn(move |_ctx| {
    ///         words.push("c");
    ///         Ok(())
    ///     });
    /// })
    /// .unwrap();
    /// assert_eq!(words, ["a", "b", "c"]);
    /// ```
    #[doc(alias = "Go")]
    pub fn spawn<F>(&self, member: F)
    where
        F: FnOnce(&Context) -> Result<(), Cause> + Send + 'scope,
    {
        self.shared.acquire();
        self.start(member);
    }

    /// Runs `member` like [`spawn`](GroupScope::spawn) only if the group is
    /// below its [limit](GroupScope::set_limit); otherwise hands it back
    /// without blocking. Go's `Group.TryGo`.
    ///
    /// # Panics
    ///
    /// Panics if the OS fails to start a thread.
    ///
    /// ```
    /// use cancelctx::{Cause, Context, Group};
    ///
    /// Group::scope(&Context::background(), |s| {
    ///     s.set_limit(1);
    ///     let (tx, rx) = std::sync::mpsc::channel::<()>();
    ///     assert!(s.try_spawn(move |_ctx| rx.recv().map_err(Cause::new)).is_ok());
    ///     assert!(s.try_spawn(|_ctx| Ok(())).is_err()); // full
    ///     tx.send(()).unwrap();
    /// })
    /// .unwrap();
    /// ```
    #[doc(alias = "TryGo")]
    pub fn try_spawn<F>(&self, member: F) -> Result<(), F>
    where
        F: FnOnce(&Context) -> Result<(), Cause> + Send + 'scope,
    {
        if !self.shared.try_acquire() {
            return Err(member);
        }
        self.start(member);
        Ok(())
    }

    /// Blocks until every member started so far has finished, then cancels
    /// the group's context and returns the first error. Go's `Group.Wait`:
    /// members can still be added afterwards (they see the canceled
    /// context), and a later `wait` returns the same first error.
    ///
    /// # Blocking
    ///
    /// Blocks the calling thread. Never call it from async code, nor from a
    /// member (it would wait for itself).
    ///
    /// # Panics
    ///
    /// Resumes the first member panic not yet resumed.
    ///
    /// ```
    /// use cancelctx::{Cause, Context, Group};
    ///
    /// Group::scope(&Context::background(), |s| {
    ///     s.spawn(|_ctx| Err(Cause::msg("phase one failed")));
    ///     let err = s.wait().unwrap_err();
    ///     assert_eq!(err.to_string(), "phase one failed");
    ///     assert!(s.context().is_done());
    /// })
    /// .unwrap_err();
    /// ```
    #[doc(alias = "Wait")]
    pub fn wait(&self) -> Result<(), Cause> {
        self.shared.wait()
    }

    /// Starts a member whose place is already taken.
    fn start<F>(&self, member: F)
    where
        F: FnOnce(&Context) -> Result<(), Cause> + Send + 'scope,
    {
        let shared = self.shared.clone();
        let body = move || {
            let ctx = &shared.ctx;
            let outcome = panic::catch_unwind(AssertUnwindSafe(move || member(ctx)));
            shared.finish(outcome);
        };
        if let Err(err) = thread::Builder::new().spawn_scoped(self.scope, body) {
            self.shared.release();
            panic!("cancelctx::GroupScope: failed to spawn a member thread: {err}");
        }
    }
}

impl fmt::Debug for GroupScope<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (limit, active, failed) = {
            let state = self.shared.state.lock();
            (state.limit, state.active, state.failed)
        };
        f.debug_struct("GroupScope")
            .field("context", &self.shared.ctx)
            .field("limit", &limit)
            .field("active", &active)
            .field("failed", &failed)
            .finish()
    }
}
