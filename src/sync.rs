//! The one place that names the crate's synchronization primitives.
//!
//! Normal builds use `parking_lot` and `std` atomics; `--cfg loom` builds
//! swap in loom's twins so the models in `tests/loom.rs` explore every
//! interleaving. `Arc` and `Weak` stay `std`'s in both (loom has no `Weak`);
//! what the models check lives in the mutexes, atomics and the
//! `event-listener` events (which switch to loom through their own feature).

#[cfg(not(loom))]
pub(crate) use parking_lot::Mutex;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};

/// loom's mutex with `parking_lot`'s signature (no poisoning).
#[cfg(loom)]
#[derive(Debug)]
pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

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
