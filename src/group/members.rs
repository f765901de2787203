//! The async group's members and the machinery that polls them: a slab of
//! pinned boxed futures, each with its own waker that queues its index.
//!
//! # Invariants
//!
//! 1. Only the driver (the [`Wait`](super::Wait) future, through `&mut
//!    Group`) touches [`Slots`]; wakers only touch [`Ready`].
//! 2. A member's index is in the ready queue at most once per wake-up: its
//!    `scheduled` flag is set by the waker that queues it and cleared by the
//!    driver right before the member is polled, so a wake during the poll
//!    queues it again.
//! 3. A stale index (the slot was freed, or reused by a newer member) only
//!    causes a spurious poll, which every future must tolerate.
//!
//! Lock order: the [`Ready`] lock and the group state lock
//! (`super::State`) are never held together, and no lock is held while a
//! member is polled or dropped or a waker is called.

use std::any::Any;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Wake, Waker};

use crate::error::Cause;
use crate::sync::{AtomicU8, Mutex, Ordering};

/// A member of an async group, boxed and pinned.
pub(crate) type Member<'a> = Pin<Box<dyn Future<Output = Result<(), Cause>> + Send + 'a>>;

/// The payload of a panic.
pub(crate) type Payload = Box<dyn Any + Send>;

/// How a member ended: its result, or the payload of its panic.
pub(crate) type Outcome = Result<Result<(), Cause>, Payload>;

/// `MemberWaker::scheduled`: the member is not in the ready queue.
const IDLE: u8 = 0;
/// `MemberWaker::scheduled`: the member is in the ready queue (or is about to
/// be polled for the first time).
const SCHEDULED: u8 = 1;

/// The queue of members to poll, shared with their wakers, and the waker of
/// the task driving the group.
#[derive(Debug)]
pub(crate) struct Ready {
    inner: Mutex<ReadyInner>,
}

#[derive(Debug, Default)]
struct ReadyInner {
    indices: Vec<usize>,
    driver: Option<Waker>,
}

impl Ready {
    pub(crate) fn new() -> Ready {
        Ready {
            inner: Mutex::new(ReadyInner::default()),
        }
    }

    /// Records `waker` as the driver's and moves the queued indices into
    /// `out`.
    pub(crate) fn take(&self, waker: &Waker, out: &mut Vec<usize>) {
        let mut inner = self.inner.lock();
        if !inner.driver.as_ref().is_some_and(|w| w.will_wake(waker)) {
            inner.driver = Some(waker.clone());
        }
        out.append(&mut inner.indices);
    }

    /// Wakes the driver (a member was admitted or queued for a poll).
    pub(crate) fn wake_driver(&self) {
        let driver = self.inner.lock().driver.clone();
        // Woken after the lock is released (lock order above).
        if let Some(driver) = driver {
            driver.wake();
        }
    }

    /// Forgets the queued indices and the driver's waker (the driver is gone).
    pub(crate) fn reset(&self) {
        let driver = {
            let mut inner = self.inner.lock();
            inner.indices.clear();
            inner.driver.take()
        };
        drop(driver); // a waker's drop is foreign code: outside the lock
    }

    fn push(&self, index: usize) {
        let driver = {
            let mut inner = self.inner.lock();
            inner.indices.push(index);
            inner.driver.clone()
        };
        if let Some(driver) = driver {
            driver.wake();
        }
    }
}

/// The waker handed to one member.
#[derive(Debug)]
struct MemberWaker {
    ready: Arc<Ready>,
    index: usize,
    /// [`IDLE`] or [`SCHEDULED`] (invariant 2).
    scheduled: AtomicU8,
}

impl Wake for MemberWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // AcqRel: the driver's `swap(IDLE)` acquires what the waker published
        // before waking, so the poll that follows sees it.
        if self.scheduled.swap(SCHEDULED, Ordering::AcqRel) == IDLE {
            self.ready.push(self.index);
        }
    }
}

struct Slot<'a> {
    member: Member<'a>,
    flag: Arc<MemberWaker>,
    waker: Waker,
}

/// The running members of one async group, owned by its driver.
pub(crate) struct Slots<'a> {
    slots: Vec<Option<Slot<'a>>>,
    free: Vec<usize>,
    len: usize,
    ready: Arc<Ready>,
}

impl<'a> Slots<'a> {
    pub(crate) fn new(ready: Arc<Ready>) -> Slots<'a> {
        Slots {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
            ready,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Stores a new member; the caller polls its index (it starts
    /// [`SCHEDULED`], so it is never queued before its first poll).
    pub(crate) fn insert(&mut self, member: Member<'a>) -> usize {
        let index = self.free.pop().unwrap_or(self.slots.len());
        let flag = Arc::new(MemberWaker {
            ready: self.ready.clone(),
            index,
            scheduled: AtomicU8::new(SCHEDULED),
        });
        let waker = Waker::from(flag.clone());
        let slot = Some(Slot {
            member,
            flag,
            waker,
        });
        if index == self.slots.len() {
            self.slots.push(slot);
        } else {
            self.slots[index] = slot;
        }
        self.len += 1;
        index
    }

    /// Polls the member at `index`, catching a panic. `Some` once it ended
    /// (the member is then dropped and its slot freed), with the payload of a
    /// panic from the member's `Drop`; `None` while it is pending or when the
    /// index is stale (invariant 3).
    pub(crate) fn poll(&mut self, index: usize) -> Option<(Outcome, Option<Payload>)> {
        let slot = self.slots.get_mut(index)?.as_mut()?;
        // AcqRel: pairs with `wake_by_ref` (invariant 2).
        slot.flag.scheduled.swap(IDLE, Ordering::AcqRel);
        let mut cx = TaskContext::from_waker(&slot.waker);
        let member = &mut slot.member;
        let outcome = match panic::catch_unwind(AssertUnwindSafe(|| member.as_mut().poll(&mut cx)))
        {
            Ok(Poll::Pending) => return None,
            Ok(Poll::Ready(result)) => Ok(result),
            Err(payload) => Err(payload),
        };
        let slot = self.slots[index].take();
        self.free.push(index);
        self.len -= 1;
        // The member's drop runs here, no lock held; a panic in it is the
        // member's, caught like one in its poll.
        let dropped = drop_caught(slot);
        Some((outcome, dropped))
    }

    /// Takes every member out, to be dropped by the caller.
    pub(crate) fn clear(&mut self) -> Vec<Member<'a>> {
        self.free.clear();
        self.len = 0;
        self.slots
            .drain(..)
            .flatten()
            .map(|slot| slot.member)
            .collect()
    }
}

impl std::fmt::Debug for Slots<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slots")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// Runs `f` (user code), catching its panic: `Some(payload)` if it panicked.
pub(crate) fn caught(f: impl FnOnce()) -> Option<Payload> {
    panic::catch_unwind(AssertUnwindSafe(f)).err()
}

/// Drops `value`, catching a panic from its `Drop`: `Some(payload)` if it
/// panicked.
pub(crate) fn drop_caught<T>(value: T) -> Option<Payload> {
    caught(move || drop(value))
}

/// Keeps `payload` in `first` unless a panic is there already, in which case
/// it is [`discard`]ed: the first panic is the one reported.
pub(crate) fn keep_first(first: &mut Option<Payload>, payload: Payload) {
    match first {
        None => *first = Some(payload),
        Some(_) => discard(payload),
    }
}

/// Drops a payload nobody will see; one whose `Drop` panics again is leaked
/// (dropping it would start the same loop).
pub(crate) fn discard(payload: Payload) {
    if let Some(again) = drop_caught(payload) {
        std::mem::forget(again);
    }
}

/// Drops `values` one at a time, each under `catch_unwind` (dropped together,
/// a second panicking `Drop` would run during the first one's unwinding and
/// abort the process). Returns the first panic; later ones are discarded.
pub(crate) fn drop_each<T>(values: impl IntoIterator<Item = T>) -> Option<Payload> {
    let mut first = None;
    for value in values {
        if let Some(payload) = drop_caught(value) {
            keep_first(&mut first, payload);
        }
    }
    first
}

/// The cancellation cause for a member's panic: a message naming it.
pub(crate) fn panic_cause(what: &str, payload: &(dyn Any + Send)) -> Cause {
    let message = if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.as_str()
    } else {
        "Box<dyn Any>"
    };
    Cause::msg(format!("{what} panicked: {message}"))
}
