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
//! While pending, the registration holds its context's node (`node`,
//! [`Holder::Strong`]), so a detached context whose only observer is a
//! callback still reaches its deadline. That reference cycle (node → slab →
//! registration → node) is broken by whichever of fire and stop wins.
//!
//! The crate's own watches ([`watch`]) hold the node weakly instead
//! ([`Holder::Weak`]): they react to a context's end without keeping it
//! observable. When nothing else observes the context it is freed, and its
//! slab drops the registration with the callback unrun (whose `Drop` is then
//! the watch's cleanup).

use std::fmt;
use std::sync::{Arc, Weak};

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
    /// The context's node, while pending; taken by whichever of fire and
    /// stop wins.
    node: Mutex<Option<Holder>>,
}

/// How a pending registration holds its context's node.
enum Holder {
    /// [`Context::after_func`]: keeps the context observable.
    Strong(Arc<CancelNode>),
    /// [`watch`]: lets the context be freed, dropping the callback unrun.
    Weak(Weak<CancelNode>),
}

impl Holder {
    fn node(&self) -> Option<Arc<CancelNode>> {
        match self {
            Holder::Strong(node) => Some(node.clone()),
            Holder::Weak(node) => node.upgrade(),
        }
    }
}

impl Registration {
    /// Registers `f` to run once `ctx` is done, holding its node strongly
    /// (`after_func`) or weakly (`watch`).
    fn new(ctx: &Context, f: Callback, strong: bool) -> Arc<Registration> {
        let reg = Arc::new(Registration {
            state: AtomicU8::new(PENDING),
            slot: AtomicUsize::new(usize::MAX),
            callback: Mutex::new(Some(f)),
            node: Mutex::new(None),
        });
        if let Some(node) = ctx.scope() {
            let holder = if strong {
                Holder::Strong(node.clone())
            } else {
                Holder::Weak(Arc::downgrade(node))
            };
            // Set before registering, so a racing cancel finds it to release.
            *reg.node.lock() = Some(holder);
            if node.register_func(&reg).is_err() {
                reg.fire();
            }
        }
        reg
    }

    /// The context ended: run the callback unless `stop` won.
    pub(crate) fn fire(&self) {
        if !self.transition(STARTED) {
            return;
        }
        let callback = self.callback.lock().take();
        let holder = self.node.lock().take();
        if let Some(callback) = callback {
            run(callback);
        }
        // May be the last reference to the node: dropped with no lock held.
        drop(holder);
    }

    /// Prevents the callback from running: see [`AfterFunc::stop`].
    fn stop(&self) -> bool {
        if !self.transition(STOPPED) {
            return false;
        }
        let holder = self.node.lock().take();
        // A watch's node may be gone: its slab, and this entry, with it.
        let node = holder.as_ref().and_then(Holder::node);
        if let Some(node) = &node {
            node.unregister_func(self);
        }
        let callback = self.callback.lock().take();
        // Dropped with no lock held: each may run user code, and the node
        // may be freed here.
        drop(callback);
        drop(holder);
        drop(node);
        true
    }

    /// PENDING → `to`; `true` for the one caller that moved it.
    fn transition(&self, to: u8) -> bool {
        // AcqRel: the winner's later reads of `callback` and `node`
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
        self.reg.stop()
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
        AfterFunc {
            reg: Registration::new(self, Box::new(f), true),
        }
    }
}

/// Runs `f` once `ctx` is done, like [`Context::after_func`], without keeping
/// `ctx` observable: if every handle on it is dropped first, it is freed as
/// usual and `f` is dropped unrun, inside that drop and with no lock held.
/// (So is it at once on a context that can never end.) For the crate's own
/// links to outside things (`tokio_util`), whose cleanup is `f`'s `Drop`.
#[cfg_attr(not(any(feature = "tokio-util", all(test, loom))), allow(dead_code))]
pub(crate) fn watch<F: FnOnce() + Send + 'static>(ctx: &Context, f: F) -> Watch {
    Watch {
        reg: Arc::downgrade(&Registration::new(ctx, Box::new(f), false)),
    }
}

/// Handle to a [`watch`]: weak, so that it is no part of a cycle through
/// the callback.
#[cfg_attr(not(any(feature = "tokio-util", all(test, loom))), allow(dead_code))]
pub(crate) struct Watch {
    reg: Weak<Registration>,
}

#[cfg_attr(not(any(feature = "tokio-util", all(test, loom))), allow(dead_code))]
impl Watch {
    /// [`AfterFunc::stop`]; `false` also once the context was freed.
    pub(crate) fn stop(&self) -> bool {
        self.reg.upgrade().is_some_and(|reg| reg.stop())
    }
}
