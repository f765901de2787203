//! The cancellation tree: one [`CancelNode`] per cancelable context.
//!
//! A node knows its parent (strongly, through the parent [`Context`]) and its
//! children (weakly, in a slab), so a child nobody can observe any more is
//! freed and unregisters itself at once, and a parent's cancellation reaches
//! every live descendant.
//!
//! # Invariants
//!
//! 1. `state` only moves forward: `LIVE` → `DONE_*` → `DONE_* | PROPAGATED`.
//!    The `DONE_*` bits are written once, under the node's lock, after
//!    `Cold::cause` (so whoever sees them under the lock also sees the cause),
//!    together with `CAUSED` if that cause is stored; a stored cause never
//!    changes again, so whoever sees `CAUSED` with `Acquire` may read it.
//!    A node built done at construction (its parent was done, or its
//!    deadline had passed) starts as `DONE_* | PROPAGATED`: it was never
//!    shared while live.
//! 2. A done node never gains a child: registration checks `state` under the
//!    parent's lock, the same lock [`CancelNode::mark`] holds while it sets
//!    the `DONE_*` bits and drains the children.
//! 3. A node is in its parent's slab only while it is alive and not yet fully
//!    canceled: the parent drains the slab when it is canceled, and the child
//!    removes its own entry when it is dropped, or once its own cancellation
//!    has reached its whole subtree (matching the entry by address, so a stale
//!    slot index is harmless).
//! 4. `PROPAGATED` is set only when every descendant registered at cancel time
//!    is `DONE_*` too. Whoever cancels a node that is already done waits for
//!    it, so `cancel()` returns only once the whole subtree is done, as Go's
//!    does, even when several threads cancel overlapping subtrees.
//! 5. The cancel walk runs no user code: wakers, `after_func` callbacks, timer
//!    cancellations, the `observe` hooks and the drops of nodes and of the
//!    deadline causes an end replaces (user values) are deferred to
//!    [`Aftermath::finish`], after the walk and with no lock held; the hooks
//!    and drops come last, so none of them, panicking, costs a waiter its
//!    wake-up or a callback its run.
//!    A thread waiting in (4) therefore waits for a walk that cannot block on
//!    it, and the waits only point down the tree: no deadlock.
//! 6. A deadline ends its node only through [`Alarm::fire`] → `cancel`,
//!    called by the timer thread or by a thread whose own clock reading is at
//!    or past it (`expiry.rs`: a real reading, at most 16 checks old). Nothing ends early, and racing fires
//!    are concurrent cancels: the first wins.
//!
//! # Lock order
//!
//! At most one node lock is held at a time, and never together with the
//! timer's heap lock or a registration's lock: collect under the lock, act
//! after releasing it. The one nesting: `mark` counts the end under the
//! node lock, and a thread's first count registers its counters under the
//! `observe` registry's lock, which is a leaf (nothing is locked under it).

use std::mem;
use std::sync::{Arc, Weak};
use std::time::Instant;

use cancelctx_timer::{Alarm, Entry, Timer};
use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::task::Waker;

use crate::after_func::Registration;
use crate::context::Context;
use crate::error::{Cause, Error};
use crate::observe::{self, End};
use crate::slab::{Slab, Slot, Slots};
use crate::sync::{self, AtomicU8, AtomicU32, Mutex, Ordering};

/// The node is live.
const LIVE: u8 = 0;
/// Done with [`Error::Canceled`].
const DONE_CANCELED: u8 = 0b001;
/// Done with [`Error::DeadlineExceeded`].
const DONE_DEADLINE: u8 = 0b010;
/// Either done bit.
const DONE: u8 = DONE_CANCELED | DONE_DEADLINE;
/// Every descendant registered when the node was canceled is done too.
const PROPAGATED: u8 = 0b100;
/// Set with the done bits when the cause is not the plain error: it is then
/// stored in `Cold::cause` (and never changes again).
const CAUSED: u8 = 0b1000;

/// `slot` value of a node that sits in no slab (slab indices are below it).
const NO_SLOT: u32 = u32::MAX;

/// A cancelable context: what `with_cancel`, `with_deadline` and
/// `with_timeout` create.
pub(crate) struct CancelNode {
    /// The context this one was derived from: for values, deadlines and
    /// `Display`. Replaced by `background` only in `Drop` (see
    /// [`unlink_chain`]).
    pub(crate) parent: Context,
    /// The effective deadline: the node's own or its parent's, the earlier.
    pub(crate) deadline: Option<Instant>,
    /// Whether the node has a timer of its own (`WithDeadline` in `Display`).
    pub(crate) own_deadline: bool,
    /// See the table of constants above.
    state: AtomicU8,
    /// The node's index in its parent's slab. Written and read under the
    /// parent's lock only (so `Relaxed` suffices).
    slot: AtomicU32,
    inner: Mutex<Inner>,
    /// Age and registry slot (feature `registry`).
    #[cfg(feature = "registry")]
    pub(crate) meta: crate::registry::Meta,
}

struct Inner {
    /// Allocated on first need: a child, a registration, a waiter, or a
    /// cause that is not the plain error. Most timeouts never need it, and a
    /// live timeout's memory is mostly its node (see `node_stays_small`).
    cold: Option<Box<Cold>>,
    /// The node's own deadline entry, until it is canceled.
    timer: Option<Entry>,
}

#[derive(Default)]
struct Cold {
    /// While live: the cause to report if the node's own deadline passes
    /// (`with_*_cause`). Once done: the cause, set together with the
    /// `DONE_*` bits, or `None` if it is the plain error the bits name.
    cause: Option<Cause>,
    /// Children, `after_func` registrations and waiters' wakers (`Done`
    /// futures and blocked threads), all drained by `mark`. Once done but not
    /// `PROPAGATED`, it holds only the wakers of cancellers waiting for the
    /// walk (drained when `PROPAGATED` is set).
    children: Slab<Child>,
    /// How many entries of `children` are wakers.
    waiters: u32,
}

impl Inner {
    fn cold(&mut self) -> &mut Cold {
        self.cold.get_or_insert_with(Box::default)
    }

    /// The stored cause (see [`Cold::cause`]).
    fn cause(&self) -> Option<Cause> {
        self.cold.as_ref()?.cause.clone()
    }

    /// The cause of a node done with `err`.
    fn done_cause(&self, err: Error) -> Cause {
        self.cause().unwrap_or_else(|| Cause::from_error(err))
    }

    /// Entries in `children`: children, registrations and waiters.
    fn len(&self) -> usize {
        self.cold.as_ref().map_or(0, |c| c.children.len())
    }

    fn waiters(&self) -> usize {
        self.cold.as_ref().map_or(0, |c| c.waiters as usize)
    }

    /// Removes the child or registration at `addr` from slot `idx`, if it
    /// is still there (a stale index matches nothing).
    fn remove_child(&mut self, idx: usize, addr: *const ()) -> Option<Child> {
        self.cold.as_mut()?.children.remove_if(idx, |c| c.is(addr))
    }

    /// Takes every entry of `children` out.
    fn take_children(&mut self) -> Slots<Child> {
        match &mut self.cold {
            Some(cold) => {
                cold.waiters = 0;
                cold.children.take()
            }
            None => Slots::new(),
        }
    }
}

/// What a node's slab holds.
pub(crate) enum Child {
    Node(Weak<CancelNode>),
    Func(Arc<Registration>),
    Waiter(Waker),
}

impl Child {
    fn is(&self, addr: *const ()) -> bool {
        match self {
            Child::Node(w) => w.as_ptr() as *const () == addr,
            Child::Func(r) => Arc::as_ptr(r) as *const () == addr,
            Child::Waiter(_) => false,
        }
    }
}

/// What a canceled node hands to its canceller.
struct Drained {
    /// Children, registrations and wakers.
    children: Slots<Child>,
    /// Whether any entry is a child or a registration (not only wakers).
    has_children: bool,
    timer: Option<Entry>,
    /// The deadline cause the node held while live, replaced by how it
    /// ended: a user value, dropped once the cancel's work is done.
    old_cause: Option<Cause>,
}

/// Work a cancellation defers until the walk is over (invariant 5).
#[derive(Default)]
struct Aftermath {
    /// Nodes to notify; those this walk ended carry how (for `observe`)
    /// and, for the `tracing` hook, their name's link, found during the
    /// walk (a lookup per node, each up to the root, made a deep cancel
    /// quadratic).
    nodes: Vec<(Arc<CancelNode>, Option<Ended>)>,
    timers: Vec<Entry>,
    funcs: Vec<Arc<Registration>>,
    wakers: Vec<Waker>,
    /// Replaced deadline causes (see `Drained::old_cause`).
    old_causes: Vec<Cause>,
}

impl Aftermath {
    /// The deferred work, in an order that keeps user code last: no hook,
    /// `Drop` or panic can cost a waiter its wake-up or a callback its run.
    fn finish(self, err: Error, cause: &Cause) {
        for entry in &self.timers {
            entry.cancel();
        }
        for func in &self.funcs {
            func.fire();
        }
        let mut panic = wake_all(self.wakers);
        for (node, ended) in &self.nodes {
            if let Some((how, named)) = ended {
                run_caught(&mut panic, || {
                    observe::ended_named(|| name_of(node, named), err, *how, cause)
                });
            }
        }
        // Dropping the rest now may drop nodes and, through them, user
        // values: one at a time, so two panicking `Drop`s do not abort.
        for node in self.nodes {
            run_caught(&mut panic, move || drop(node));
        }
        for cause in self.old_causes {
            run_caught(&mut panic, move || drop(cause));
        }
        if let Some(payload) = panic {
            resume_unwind(payload);
        }
    }
}

/// The wakers among drained entries.
fn wakers(slots: Slots<Child>) -> impl Iterator<Item = Waker> {
    slots.into_iter().filter_map(|slot| match slot {
        Slot::Occupied(Child::Waiter(waker)) => Some(waker),
        _ => None,
    })
}

/// Wakes every waker, none under a lock. A panicking waker does not stop the
/// others: the first panic is returned, to resume once all work is done.
fn wake_all(wakers: impl IntoIterator<Item = Waker>) -> Option<Box<dyn Any + Send>> {
    let mut panic = None;
    for waker in wakers {
        run_caught(&mut panic, move || waker.wake());
    }
    panic
}

/// Runs `f`, user code (a waker, an `observe` hook, a user value's `Drop`),
/// keeping its panic in `panic` unless one is there already: the first is
/// resumed once all work is done. A later payload is forgotten, not dropped
/// (its own `Drop` is user code that may panic too).
fn run_caught(panic: &mut Option<Box<dyn Any + Send>>, f: impl FnOnce()) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
        match panic {
            None => *panic = Some(payload),
            Some(_) => std::mem::forget(payload),
        }
    }
}

struct Frame {
    node: Arc<CancelNode>,
    children: smallvec::IntoIter<[Slot<Child>; crate::slab::INLINE]>,
    named: Named,
}

/// How a node the walk ended ended, and its name (see [`Named`]).
type Ended = (End, Named);

/// What the `tracing` hook needs to name an ended node: the nearest `named`
/// link above it, if any (`None` while the event is disabled; nothing
/// without the feature).
#[cfg(feature = "tracing")]
type Named = Option<Option<Context>>;
#[cfg(not(feature = "tracing"))]
type Named = ();

/// `Named` of the node a cancel walk starts from (one walk up the chain).
#[cfg(feature = "tracing")]
fn named_root(node: &CancelNode) -> Named {
    if tracing::enabled!(target: "cancelctx", tracing::Level::DEBUG) {
        Some(node.parent.named_link())
    } else {
        None
    }
}

#[cfg(not(feature = "tracing"))]
fn named_root(_: &CancelNode) -> Named {}

/// `Named` of `child`, registered under the node named `parent`: only the
/// links between the two are looked at.
#[cfg(feature = "tracing")]
fn named_child(child: &CancelNode, parent: &Named) -> Named {
    let inherited = parent.as_ref()?;
    Some(match child.parent.segment() {
        (Some(link), _) => Some(link.clone()),
        (None, Some(_)) => inherited.clone(),
        (None, None) => None,
    })
}

#[cfg(not(feature = "tracing"))]
fn named_child(_: &CancelNode, _: &Named) -> Named {}

/// The name of `node`, ended by a walk that found `named`. A walk that
/// found none (the `enabled!` hint said no: a subscriber may still want the
/// event itself, e.g. one enabling events only) looks it up now.
#[cfg(feature = "tracing")]
fn name_of<'a>(node: &'a CancelNode, named: &'a Named) -> Option<&'a str> {
    match named {
        Some(link) => link.as_ref()?.name(),
        None => node.name(),
    }
}

#[cfg(not(feature = "tracing"))]
fn name_of<'a>(_: &'a CancelNode, _: &Named) -> Option<&'a str> {
    None
}

impl CancelNode {
    /// Creates a node under `parent`, registers it and arms its timer.
    ///
    /// `deadline` is the requested one (`None`: `with_cancel`); it is only
    /// armed when it is not later than the parent's. `now` is the caller's
    /// reading of the clock, if it has one (`with_cancel` reads none);
    /// `timer` `None` is the global timer (started only when a deadline is
    /// armed).
    pub(crate) fn new(
        parent: &Context,
        deadline: Option<Instant>,
        deadline_cause: Option<Cause>,
        now: Option<Instant>,
        timer: Option<&Timer>,
    ) -> Arc<CancelNode> {
        let inherited = parent.deadline();
        // Go: a child deadline later than the parent's is the parent's.
        let own = deadline.filter(|d| inherited.is_none_or(|p| *d <= p));
        let scope = parent.scope();
        // Done at construction: a parent already done, or an own deadline
        // already passed. Such a node is built done (no locks, no parent
        // registration, no timer); a parent that ends after this check is
        // caught by `register_node` below, under its lock.
        let ended = match scope.and_then(|scope| scope.ended()) {
            Some((err, cause)) => Some((err, cause, End::Parent)),
            None => own
                .filter(|at| *at <= now.unwrap_or_else(Instant::now))
                .map(|_| {
                    let err = Error::DeadlineExceeded;
                    let cause = deadline_cause.clone();
                    let cause = cause.unwrap_or_else(|| Cause::from_error(err));
                    (err, cause, End::Deadline)
                }),
        };
        if let Some((err, cause, how)) = ended {
            return CancelNode::new_done(parent, own, inherited, err, cause, how);
        }
        let node = CancelNode::alloc(parent, own, inherited, LIVE, own.and(deadline_cause));
        if let Some(scope) = scope {
            if let Err((err, cause)) = scope.register_node(&node) {
                // The parent ended since `ended()` looked.
                node.cancel(err, Some(cause), End::Parent);
                return node;
            }
        }
        if let Some(at) = own {
            let alarm: Weak<dyn Alarm> = Arc::downgrade(&node) as Weak<dyn Alarm>;
            let entry = timer
                .unwrap_or_else(|| Timer::global())
                .schedule_alarm(at, alarm);
            let mut inner = node.inner.lock();
            // Relaxed: `state`'s done bits are written under this lock.
            if node.state.load(Ordering::Relaxed) == LIVE {
                inner.timer = Some(entry);
            } else {
                drop(inner);
                entry.cancel();
            }
        }
        node
    }

    /// A node done at construction with `err` and `cause` (ended `how`):
    /// never registered, never armed, nothing to propagate.
    fn new_done(
        parent: &Context,
        own: Option<Instant>,
        inherited: Option<Instant>,
        err: Error,
        cause: Cause,
        how: End,
    ) -> Arc<CancelNode> {
        let plain = cause.is_plain(err);
        let state = done_bits(err, plain, false);
        let stored = (!plain).then(|| cause.clone());
        let node = CancelNode::alloc(parent, own, inherited, state, stored);
        observe::count_ended(how);
        observe::ended(&node, err, how, &cause);
        node
    }

    /// Allocates a node in `state` with `cause` stored (see `Cold::cause`),
    /// counted and (feature `registry`) registered, not yet in its parent.
    fn alloc(
        parent: &Context,
        own: Option<Instant>,
        inherited: Option<Instant>,
        state: u8,
        cause: Option<Cause>,
    ) -> Arc<CancelNode> {
        let node = Arc::new(CancelNode {
            parent: parent.clone(),
            deadline: own.or(inherited),
            own_deadline: own.is_some(),
            state: AtomicU8::new(state),
            slot: AtomicU32::new(NO_SLOT),
            inner: Mutex::new(Inner {
                cold: cause.map(|cause| {
                    Box::new(Cold {
                        cause: Some(cause),
                        ..Cold::default()
                    })
                }),
                timer: None,
            }),
            #[cfg(feature = "registry")]
            meta: crate::registry::Meta::new(),
        });
        observe::created();
        #[cfg(feature = "registry")]
        crate::registry::insert(&node);
        node
    }

    /// How the node ended, if it has: the error and its cause. Takes the
    /// lock only for a cause other than the plain error.
    fn ended(&self) -> Option<(Error, Cause)> {
        // Acquire: as in `err`; it also makes a stored cause visible.
        let state = self.state.load(Ordering::Acquire);
        let err = decode(state)?;
        if state & CAUSED == 0 {
            return Some((err, Cause::from_error(err)));
        }
        Some((err, self.inner.lock().done_cause(err)))
    }

    /// `None` while live.
    #[inline]
    pub(crate) fn err(&self) -> Option<Error> {
        // Acquire: whatever the canceller did before canceling is visible to
        // whoever sees the context done (Go's channel-close guarantee).
        decode(self.state.load(Ordering::Acquire))
    }

    pub(crate) fn cause(&self) -> Option<Cause> {
        self.ended().map(|(_, cause)| cause)
    }

    /// The nearest name on the node's chain.
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    pub(crate) fn name(&self) -> Option<&str> {
        self.parent.name()
    }

    /// Children and `after_func` registrations now registered.
    pub(crate) fn child_count(&self) -> usize {
        let inner = self.inner.lock();
        inner.len() - inner.waiters()
    }

    /// Waiters registered now (`Done` futures and blocked threads).
    #[cfg_attr(not(feature = "registry"), allow(dead_code))]
    pub(crate) fn waiter_count(&self) -> usize {
        let inner = self.inner.lock();
        // Relaxed: the done bits are written under this lock.
        if self.state.load(Ordering::Relaxed) & DONE == 0 {
            inner.waiters()
        } else {
            0
        }
    }

    /// Registers `waker` to be woken when the node is done, or updates the
    /// registration `*key` made by an earlier call; `Some(err)` once done
    /// (the registration is then gone). The waker is cloned, and a replaced
    /// one dropped, outside the lock: they are user code.
    pub(crate) fn poll_done(&self, key: &mut Option<usize>, waker: &Waker) -> Option<Error> {
        if let Some(err) = self.err() {
            *key = None;
            return Some(err);
        }
        let mut waker = Some(waker.clone());
        let mut inner = self.inner.lock();
        // Relaxed: the done bits are written under this lock.
        if let Some(err) = decode(self.state.load(Ordering::Relaxed)) {
            drop(inner);
            *key = None;
            return Some(err);
        }
        let cold = inner.cold();
        match key.and_then(|k| cold.children.get_mut(k)) {
            Some(Child::Waiter(registered)) => {
                if !registered.will_wake(waker.as_ref().expect("set above")) {
                    mem::swap(registered, waker.as_mut().expect("set above"));
                }
            }
            _ => {
                let child = Child::Waiter(waker.take().expect("set above"));
                *key = Some(cold.children.insert(child));
                cold.waiters += 1;
            }
        }
        drop(inner);
        drop(waker);
        None
    }

    /// Withdraws the registration `key` of a waiter that stops waiting.
    pub(crate) fn cancel_wait(&self, key: usize) {
        let mut inner = self.inner.lock();
        // Relaxed: the done bits are written under this lock. Once done, the
        // registration was drained already (and the slab may now hold
        // cancellers waiting for `PROPAGATED`: not ours to touch).
        let live = self.state.load(Ordering::Relaxed) & DONE == 0;
        let removed = match &mut inner.cold {
            Some(cold) if live => {
                let removed = cold
                    .children
                    .remove_if(key, |c| matches!(c, Child::Waiter(_)));
                if removed.is_some() {
                    cold.waiters -= 1;
                }
                removed
            }
            _ => None,
        };
        drop(inner);
        drop(removed);
    }

    /// Registers `child` (invariant 2), or says how the parent ended.
    fn register_node(&self, child: &Arc<CancelNode>) -> Result<(), (Error, Cause)> {
        let mut inner = self.inner.lock();
        self.check_live(&inner)?;
        let idx = inner
            .cold()
            .children
            .insert(Child::Node(Arc::downgrade(child)));
        // Relaxed: read under this same lock (`unregister`).
        // Slab indices are below `u32::MAX` (`Slab::insert`).
        child.slot.store(idx as u32, Ordering::Relaxed);
        Ok(())
    }

    /// Registers an `after_func` callback, or says how the node ended.
    pub(crate) fn register_func(&self, reg: &Arc<Registration>) -> Result<(), (Error, Cause)> {
        let mut inner = self.inner.lock();
        self.check_live(&inner)?;
        let idx = inner.cold().children.insert(Child::Func(reg.clone()));
        // Relaxed: read under this same lock (`unregister_func`).
        reg.slot.store(idx, Ordering::Relaxed);
        Ok(())
    }

    /// Removes a stopped `after_func` registration.
    pub(crate) fn unregister_func(&self, reg: &Registration) {
        let mut inner = self.inner.lock();
        // Relaxed: written under this same lock (`register_func`).
        let idx = reg.slot.load(Ordering::Relaxed);
        let addr = reg as *const Registration as *const ();
        let removed = inner.remove_child(idx, addr);
        drop(inner);
        drop(removed);
    }

    fn check_live(&self, inner: &Inner) -> Result<(), (Error, Cause)> {
        // Relaxed: the done bits are written under the lock the caller holds.
        match decode(self.state.load(Ordering::Relaxed)) {
            None => Ok(()),
            Some(err) => Err((err, inner.done_cause(err))),
        }
    }

    /// Removes this node from its parent's slab (invariant 3).
    fn unregister(&self) {
        self.unregister_at(self as *const CancelNode as *const ());
    }

    /// [`unregister`](Self::unregister) for a node whose slab entry points at
    /// `addr`: where the node lived inside its `Arc`, which differs from
    /// `self` once [`take_parent`] has moved the node out.
    fn unregister_at(&self, addr: *const ()) {
        let Some(scope) = self.parent.scope() else {
            return;
        };
        // Relaxed, without the lock: only this node's own unregistration
        // (which runs once: its canceller or its last owner) writes `NO_SLOT`
        // after registration, and registration happened before the node was
        // shared. So `NO_SLOT` here means "never registered": skip the lock.
        if self.slot.load(Ordering::Relaxed) == NO_SLOT {
            return;
        }
        let mut inner = scope.inner.lock();
        // Relaxed: written under this same lock (`register_node`).
        let idx = self.slot.swap(NO_SLOT, Ordering::Relaxed);
        let removed = inner.remove_child(idx as usize, addr);
        drop(inner);
        drop(removed);
    }

    /// Marks the node done, first cause wins (invariants 1 and 2), and counts
    /// it as ended `how` before publishing the done bits. `None` if it
    /// already was.
    fn mark(&self, err: Error, cause: &Cause, how: End) -> Option<Drained> {
        let mut inner = self.inner.lock();
        // Relaxed: the done bits are only written under this lock.
        if self.state.load(Ordering::Relaxed) & DONE != 0 {
            return None;
        }
        let plain = cause.is_plain(err);
        // The deadline cause this replaces is user data: its `Drop` must not
        // run under this lock, in the middle of a walk (invariant 5).
        let old_cause = if !plain {
            inner.cold().cause.replace(cause.clone())
        } else {
            inner.cold.as_mut().and_then(|cold| cold.cause.take())
        };
        let has_children = inner.len() > inner.waiters();
        let children = inner.take_children();
        let timer = inner.timer.take();
        // Before the done bits: whoever sees the node done sees it counted.
        observe::count_ended(how);
        // Release: pairs with the Acquire in `err` and `ended` (and publishes
        // `cause` and the count).
        self.state
            .store(done_bits(err, plain, has_children), Ordering::Release);
        drop(inner);
        Some(Drained {
            children,
            has_children,
            timer,
            old_cause,
        })
    }

    /// Cancels this node and every descendant, without recursion; returns once
    /// all of them are done (invariant 4). Idempotent: the first cause wins.
    /// `true` if this call ended the node (it won), `false` if it already was.
    pub(crate) fn cancel(self: &Arc<Self>, err: Error, cause: Option<Cause>, how: End) -> bool {
        let cause = cause.unwrap_or_else(|| Cause::from_error(err));
        let Some(drained) = self.mark(err, &cause, how) else {
            self.wait_propagated();
            return false;
        };
        if !drained.has_children {
            // A leaf: nothing to walk, nothing to allocate.
            self.unregister();
            if let Some(entry) = drained.timer {
                entry.cancel();
            }
            let mut panic = wake_all(wakers(drained.children));
            run_caught(&mut panic, || observe::ended(self, err, how, &cause));
            run_caught(&mut panic, move || drop(drained.old_cause));
            if let Some(payload) = panic {
                resume_unwind(payload);
            }
            return true;
        }
        let mut after = Aftermath::default();
        after.timers.extend(drained.timer);
        after.old_causes.extend(drained.old_cause);
        let mut stack = vec![Frame {
            node: self.clone(),
            children: drained.children.into_iter(),
            named: named_root(self),
        }];
        while let Some(top) = stack.last_mut() {
            let Some(slot) = top.children.next() else {
                let frame = stack.pop().expect("stack is not empty");
                after.wakers.extend(wakers(frame.node.mark_propagated()));
                let ended = if Arc::ptr_eq(&frame.node, self) {
                    how
                } else {
                    End::Parent
                };
                after.nodes.push((frame.node, Some((ended, frame.named))));
                continue;
            };
            match slot {
                Slot::Vacant(_) => {}
                Slot::Occupied(Child::Func(reg)) => after.funcs.push(reg),
                Slot::Occupied(Child::Waiter(waker)) => after.wakers.push(waker),
                Slot::Occupied(Child::Node(weak)) => {
                    // A failed upgrade is a child being dropped right now.
                    let Some(child) = weak.upgrade() else {
                        continue;
                    };
                    match child.mark(err, &cause, End::Parent) {
                        Some(d) => {
                            after.timers.extend(d.timer);
                            after.old_causes.extend(d.old_cause);
                            #[allow(clippy::let_unit_value)] // without `tracing`
                            let named = named_child(&child, &top.named);
                            stack.push(Frame {
                                node: child,
                                children: d.children.into_iter(),
                                named,
                            });
                        }
                        None => {
                            // Canceled by another thread: wait for its walk.
                            child.wait_propagated();
                            after.nodes.push((child, None));
                        }
                    }
                }
            }
        }
        // Only now leave the parent's slab: a parent canceled meanwhile must
        // find this node and wait for its `PROPAGATED` (invariant 4).
        self.unregister();
        after.finish(err, &cause);
        true
    }

    /// Sets `PROPAGATED` (invariant 4) and hands back the cancellers waiting
    /// for it, to wake after the walk.
    fn mark_propagated(&self) -> Slots<Child> {
        let mut inner = self.inner.lock();
        // Release: pairs with the Acquire in `wait_propagated`.
        self.state.fetch_or(PROPAGATED, Ordering::Release);
        let waiters = inner.take_children();
        drop(inner);
        waiters
    }

    /// Blocks until invariant 4 holds for this done node.
    fn wait_propagated(&self) {
        // Acquire: pairs with the Release that set PROPAGATED.
        if self.state.load(Ordering::Acquire) & PROPAGATED != 0 {
            return;
        }
        let waker = sync::thread_waker();
        let mut inner = self.inner.lock();
        // Relaxed: under the lock `mark_propagated` sets it under.
        if self.state.load(Ordering::Relaxed) & PROPAGATED != 0 {
            return;
        }
        // Never withdrawn: `mark_propagated` drains it. (Only wakers enter a
        // done node's slab: registration refuses children, invariant 2.)
        // Counted as a waiter, not a child (`child_count`).
        let cold = inner.cold();
        cold.children.insert(Child::Waiter(waker));
        cold.waiters += 1;
        drop(inner);
        while self.state.load(Ordering::Acquire) & PROPAGATED == 0 {
            sync::park();
        }
    }
}

impl Alarm for CancelNode {
    fn fire(self: Arc<Self>) {
        let now = Instant::now();
        // While live, `cause` holds the deadline's cause (see `Inner`); if the
        // node ends meanwhile, the first cause wins anyway.
        let cause = self.inner.lock().cause();
        // Lateness counts once, for whoever fired the deadline: the timer
        // thread, a waiter or an observer (`expiry.rs`).
        // `cancel` resumes a panic of the user code it ran (a waker, a hook,
        // a drop) once its work is done: the deadline was fired by this call
        // all the same, so record it before passing the panic on. A losing
        // call would run one piece of user code, the drop of its `cause` (a
        // clone of the deadline cause, the last one once a winning cancel
        // has replaced and dropped it): the original is kept out here, so
        // a panic out of `cancel` is always a winner's.
        let won = catch_unwind(AssertUnwindSafe(|| {
            self.cancel(Error::DeadlineExceeded, cause.clone(), End::Deadline)
        }));
        if won.as_ref().map_or(true, |won| *won) {
            if let Some(deadline) = self.deadline {
                observe::deadline_fired(now.saturating_duration_since(deadline));
            }
        }
        let dropped = catch_unwind(AssertUnwindSafe(move || drop(cause)));
        match (won, dropped) {
            (Err(payload), later) => {
                // A later payload is forgotten, not dropped (user code too).
                if let Err(later) = later {
                    std::mem::forget(later);
                }
                resume_unwind(payload);
            }
            (Ok(_), Err(payload)) => resume_unwind(payload),
            (Ok(_), Ok(())) => {}
        }
    }
}

impl CancelNode {
    /// Nobody can observe the node any more: give up its place in the
    /// parent's slab and its timer entry at once (invariant 3). Idempotent.
    fn release(&self) {
        self.release_at(self as *const CancelNode as *const ());
    }

    /// [`release`](Self::release) for a node that lived at `addr`.
    fn release_at(&self, addr: *const ()) {
        // Relaxed: called by the node's last owner.
        if self.state.load(Ordering::Relaxed) & DONE == 0 {
            self.unregister_at(addr);
            // Only a node with a deadline of its own has a timer entry.
            if self.own_deadline {
                let timer = self.inner.lock().timer.take();
                if let Some(entry) = timer {
                    entry.cancel();
                }
            }
        }
    }
}

impl Drop for CancelNode {
    fn drop(&mut self) {
        self.release();
        #[cfg(feature = "registry")]
        crate::registry::remove(&self.meta);
        unlink_chain(mem::take(&mut self.parent));
    }
}

#[inline]
fn decode(state: u8) -> Option<Error> {
    if state & DONE_CANCELED != 0 {
        Some(Error::Canceled)
    } else if state & DONE_DEADLINE != 0 {
        Some(Error::DeadlineExceeded)
    } else {
        None
    }
}

fn encode(err: Error) -> u8 {
    match err {
        Error::Canceled => DONE_CANCELED,
        Error::DeadlineExceeded => DONE_DEADLINE,
    }
}

/// The state of a node that `mark` ends with `err`: `plain` if the cause is
/// the plain error (not stored), `has_children` if it has descendants to walk
/// before it is `PROPAGATED`.
fn done_bits(err: Error, plain: bool, has_children: bool) -> u8 {
    encode(err) | if plain { 0 } else { CAUSED } | if has_children { 0 } else { PROPAGATED }
}

/// Drops a chain of contexts from the leaf up without recursion: each node
/// whose last reference this is gives up its parent before it is dropped, so
/// a million-deep chain needs no deeper stack than a single node.
pub(crate) fn unlink_chain(mut next: Context) {
    while let Some(parent) = next.take_parent_if_unique() {
        next = parent;
    }
}

/// For `CancelNode`'s side of [`unlink_chain`].
pub(crate) fn take_parent(node: Arc<CancelNode>) -> Option<Context> {
    // The parent's slab knows the node by its address inside the `Arc`.
    let addr = Arc::as_ptr(&node) as *const ();
    let mut node = Arc::into_inner(node)?;
    // Release while the parent is still known: `Drop` will not know it.
    node.release_at(addr);
    Some(mem::take(&mut node.parent))
}

#[cfg(all(test, target_pointer_width = "64", not(feature = "registry")))]
mod tests {
    use super::*;

    /// A guard on the memory of a live timeout: the node is most of it.
    #[test]
    fn node_stays_small() {
        let size = std::mem::size_of::<CancelNode>();
        // 88 + the `Arc`'s two counts = 104 bytes: glibc's 112-byte chunk.
        // The parts: parent 24, deadline 16, state + slot 8, the lock 8,
        // the lazily allocated cold part 8, the timer entry 24.
        assert!(size <= 88, "CancelNode grew to {size} bytes");
        assert_eq!(std::mem::size_of::<Inner>(), 32);
    }
}
