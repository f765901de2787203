//! The one place that names the crate's synchronization primitives.
//!
//! Normal builds use `parking_lot`, `std` atomics and `std` thread parking;
//! `--cfg loom` builds swap in loom's twins so the models in
//! `loom_models.rs` explore every interleaving. `Arc` and `Weak` stay
//! `std`'s in both (loom has no `Weak`); what the models check lives in the
//! mutexes, atomics and parking.

#[cfg(not(loom))]
pub(crate) use parking_lot::{Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU8, AtomicU32, AtomicUsize, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU8, AtomicU32, AtomicUsize, Ordering};

/// Atomics and a lock for statistics only: never part of a synchronization
/// argument, so the real ones under loom too (and usable in `static`s).
pub(crate) mod stat {
    pub(crate) use parking_lot::Mutex;
    #[cfg(feature = "registry")]
    pub(crate) use std::sync::atomic::AtomicUsize;
    pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
}

/// loom's mutex with `parking_lot`'s signature (no poisoning).
#[cfg(loom)]
#[derive(Debug)]
pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

#[cfg(loom)]
pub(crate) use loom::sync::MutexGuard;

#[cfg(loom)]
impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Mutex<T> {
        Mutex(loom::sync::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

use std::sync::Arc;
use std::task::{Wake, Waker};

#[cfg(loom)]
use loom::thread::{Thread, current};
#[cfg(not(loom))]
use std::thread::{Thread, current};

#[cfg(loom)]
pub(crate) use loom::thread::park;
/// Parks the current thread until a [`thread_waker`] of it is woken (or
/// spuriously: callers loop).
#[cfg(not(loom))]
pub(crate) use std::thread::park;

/// Like [`park`], for at most `timeout`. (Loom has no time: untimed there.)
#[cfg(not(loom))]
pub(crate) use std::thread::park_timeout;
#[cfg(loom)]
pub(crate) fn park_timeout(_timeout: std::time::Duration) {
    loom::thread::park();
}

/// Unparks its thread when woken: how a blocked thread waits on the same
/// waker lists as a future.
struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// A waker that unparks the calling thread.
pub(crate) fn thread_waker() -> Waker {
    Waker::from(Arc::new(ThreadWaker(current())))
}

/// A condition variable over [`Mutex`], by-value guard style for both twins.
#[derive(Debug, Default)]
pub(crate) struct Condvar(
    #[cfg(not(loom))] parking_lot::Condvar,
    #[cfg(loom)] loom::sync::Condvar,
);

impl Condvar {
    pub(crate) fn new() -> Condvar {
        Condvar(Default::default())
    }

    /// Releases `guard`, waits for a notification (or spuriously), relocks.
    #[cfg(not(loom))]
    pub(crate) fn wait<'a, T>(&self, mut guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.0.wait(&mut guard);
        guard
    }

    #[cfg(loom)]
    pub(crate) fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.0.wait(guard).unwrap_or_else(|e| e.into_inner())
    }

    /// [`wait`](Condvar::wait), for at most `timeout`; `true` if it timed
    /// out. (The callback pool's, which loom models do not run.)
    #[cfg(not(loom))]
    pub(crate) fn wait_for<'a, T>(
        &self,
        mut guard: MutexGuard<'a, T>,
        timeout: std::time::Duration,
    ) -> (MutexGuard<'a, T>, bool) {
        let timed_out = self.0.wait_for(&mut guard, timeout).timed_out();
        (guard, timed_out)
    }

    #[cfg(not(loom))]
    pub(crate) fn notify_one(&self) {
        self.0.notify_one();
    }

    pub(crate) fn notify_all(&self) {
        self.0.notify_all();
    }
}
