//! [`Context::after_func`]: run a callback once a context is done.
//!
//! A [`Registration`] sits in its context's slab of children until the
//! context ends (the cancel walk hands it to the callback pool) or
//! [`AfterFunc::stop`] removes it. Its `state` decides, by one
//! compare-and-swap, which of the two wins:
//!
//! | state     | meaning                                   |
//! |-----------|-------------------------------------------|
//! | `PENDING` | registered, neither run nor stopped       |
//! | `STARTED` | handed to the callback pool (runs once)   |
//! | `STOPPED` | `stop()` won; the callback is dropped     |
//!
//! While pending, the registration holds its context's node (`keep_alive`),
//! so a detached context whose only observer is a callback still reaches its
//! deadline. That reference cycle (node → slab → registration → node) is
//! broken by whichever of fire and stop wins.

use std::fmt;
use std::sync::Arc;

use crate::context::Context;
use crate::node::CancelNode;
use crate::sync::{AtomicU8, AtomicUsize, Mutex, Ordering};

const PENDING: u8 = 0;
const STARTED: u8 = 1;
const STOPPED: u8 = 2;

type Callback = Box<dyn FnOnce() + Send + 'static>;

pub(crate) struct Registration {
    state: AtomicU8,
    /// Index in the node's slab; written and read under the node's lock.
    pub(crate) slot: AtomicUsize,
    callback: Mutex<Option<Callback>>,
    keep_alive: Mutex<Option<Arc<CancelNode>>>,
}

impl Registration {
    /// The context ended: run the callback unless `stop` won.
    pub(crate) fn fire(&self) {
        if !self.transition(STARTED) {
            return;
        }
        let callback = self.callback.lock().take();
        let keep_alive = self.keep_alive.lock().take();
        if let Some(callback) = callback {
            run(callback);
        }
        // May be the last reference to the node: dropped with no lock held.
        drop(keep_alive);
    }

    /// PENDING → `to`; `true` for the one caller that moved it.
    fn transition(&self, to: u8) -> bool {
        // AcqRel: the winner's later reads of `callback` and `keep_alive`
        // see what the registering thread wrote.
        self.state
            .compare_exchange(PENDING, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

#[cfg(not(loom))]
fn run(callback: Callback) {
    crate::pool::Pool::global().submit(callback);
}

/// The loom models check who wins, not where the callback runs.
#[cfg(loom)]
fn run(callback: Callback) {
    callback();
}

/// Handle to a callback registered with [`Context::after_func`].
///
/// Dropping it leaves the callback registered (Go's `AfterFunc` returns a
/// `stop` function that may be ignored the same way).
#[must_use = "dropping an AfterFunc leaves the callback registered; that is fine, but then it cannot be stopped"]
pub struct AfterFunc {
    reg: Arc<Registration>,
}

impl AfterFunc {
    /// Prevents the callback from running. `true` if this call did so;
    /// `false` if it has already been started or stopped. Exactly one of
    /// "a `stop` returned `true`" and "the callback ran" happens.
    ///
    /// `stop` does not wait for a callback that has started.
    ///
    /// ```
    /// use cancelctx::Context;
    ///
    /// let (ctx, guard) = Context::background().with_cancel();
    /// let registration = ctx.after_func(|| unreachable!("stopped first"));
    /// assert_eq!(ctx.child_count(), 1);
    /// assert!(registration.stop());
    /// assert!(!registration.stop());
    /// assert_eq!(ctx.child_count(), 0);
    /// guard.cancel();
    /// ```
    pub fn stop(&self) -> bool {
        if !self.reg.transition(STOPPED) {
            return false;
        }
        let keep_alive = self.reg.keep_alive.lock().take();
        if let Some(node) = &keep_alive {
            node.unregister_func(&self.reg);
        }
        let callback = self.reg.callback.lock().take();
        // Dropped with no lock held: either may run user code.
        drop(callback);
        drop(keep_alive);
        true
    }
}

impl fmt::Debug for AfterFunc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Relaxed: a snapshot for display.
        let state = match self.reg.state.load(Ordering::Relaxed) {
            PENDING => "pending",
            STARTED => "started",
            _ => "stopped",
        };
        f.debug_struct("AfterFunc").field("state", &state).finish()
    }
}

impl Context {
    /// Runs `f` once, after this context is done: Go's `context.AfterFunc`.
    ///
    /// `f` runs on the crate's callback pool (threads named
    /// `cancelctx-callback-N`), never inline in the canceller, which never
    /// waits for it: a callback that blocks delays nothing else. If the
    /// context is already done, `f` is started at once (still on the pool).
    /// Each registration is independent; until it runs or is stopped it
    /// counts in [`child_count`](Context::child_count) and keeps the context
    /// observable, so a detached timeout context still fires for it. On a
    /// context that can never end, `f` never runs.
    ///
    /// A panic in `f` is caught and reported on stderr; the pool lives on.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use cancelctx::Context;
    ///
    /// let (ctx, guard) = Context::background().with_cancel();
    /// let (tx, rx) = mpsc::channel();
    /// let _registration = ctx.after_func(move || tx.send("cleaned up").unwrap());
    /// guard.cancel();
    /// assert_eq!(rx.recv().unwrap(), "cleaned up");
    /// ```
    #[doc(alias = "AfterFunc")]
    pub fn after_func<F: FnOnce() + Send + 'static>(&self, f: F) -> AfterFunc {
        let reg = Arc::new(Registration {
            state: AtomicU8::new(PENDING),
            slot: AtomicUsize::new(usize::MAX),
            callback: Mutex::new(Some(Box::new(f))),
            keep_alive: Mutex::new(None),
        });
        if let Some(node) = self.scope() {
            // Set before registering, so a racing cancel finds it to release.
            *reg.keep_alive.lock() = Some(node.clone());
            if node.register_func(&reg).is_err() {
                reg.fire();
            }
        }
        AfterFunc { reg }
    }
}
