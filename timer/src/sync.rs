//! The only module that names synchronization primitives.
//!
//! Normal builds use `std::sync::Arc`, std's atomics and `parking_lot`'s
//! `Mutex`/`Condvar`; `--cfg loom` builds swap in loom's mocks so the models
//! in `loom_tests` explore every interleaving of the real code. Both sides
//! expose the same small API: `Mutex::lock()` returns the guard directly (no
//! poisoning), and `Condvar::wait*` take and return the guard by value. Only
//! normal builds have the timed `wait_until`: loom has no time, and its models
//! park with untimed waits.
//!
//! [`thread_index`] numbers threads for shard selection; under loom it is
//! always 0 (loom threads share one OS thread, and a process-wide counter
//! would make executions differ), so the models pick shards explicitly.
//!
//! The alarm API ([`AlarmArc`], [`AlarmWeak`]) always uses the standard
//! library's `Arc`/`Weak`: loom has no `Weak`, and a trait method with a
//! `self: Arc<Self>` receiver is only allowed for the standard `Arc`.

/// Strong pointer type of [`crate::Alarm::fire`]'s receiver (always std's).
pub(crate) type AlarmArc<T> = std::sync::Arc<T>;
/// Weak pointer type handed to [`crate::Timer::schedule_alarm`] (always std's).
pub(crate) type AlarmWeak<T> = std::sync::Weak<T>;

#[cfg(not(loom))]
pub(crate) use self::imp_std::*;

#[cfg(loom)]
pub(crate) use self::imp_loom::*;

#[cfg(not(loom))]
mod imp_std {
    use std::cell::Cell;
    use std::time::Instant;

    pub(crate) use parking_lot::{Mutex, MutexGuard};
    pub(crate) use std::sync::Arc;
    pub(crate) use std::sync::atomic::{AtomicU8, AtomicU64};

    /// A small number fixed per thread, handed out round-robin on first use
    /// (so threads that start scheduling one after the other get different
    /// shards). Costs one thread-local load after the first call.
    pub(crate) fn thread_index() -> usize {
        use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            // No destructor: usable even from other thread-locals' destructors.
            static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
        }
        INDEX
            .try_with(|index| match index.get() {
                usize::MAX => {
                    // Relaxed: only the counter's atomicity matters.
                    let fresh = NEXT.fetch_add(1, Relaxed) & (usize::MAX >> 1);
                    index.set(fresh);
                    fresh
                }
                fixed => fixed,
            })
            .unwrap_or(0)
    }

    /// A condition variable whose waits take and return the guard by value.
    #[derive(Debug, Default)]
    pub(crate) struct Condvar(parking_lot::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Self {
            Self(parking_lot::Condvar::new())
        }

        /// Blocks until notified (spurious wake-ups are possible).
        pub(crate) fn wait<'a, T>(&self, mut guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
            self.0.wait(&mut guard);
            guard
        }

        /// Blocks until notified or until `deadline` passes.
        pub(crate) fn wait_until<'a, T>(
            &self,
            mut guard: MutexGuard<'a, T>,
            deadline: Instant,
        ) -> MutexGuard<'a, T> {
            let _timed_out = self.0.wait_until(&mut guard, deadline);
            guard
        }

        pub(crate) fn notify_one(&self) {
            self.0.notify_one();
        }
    }
}

#[cfg(loom)]
mod imp_loom {
    pub(crate) use loom::sync::atomic::{AtomicU8, AtomicU64};
    pub(crate) use loom::sync::{Arc, MutexGuard};

    /// Always 0 under loom (see the module docs).
    pub(crate) fn thread_index() -> usize {
        0
    }

    /// loom's mutex with a `parking_lot`-style `lock()` (poisoning unwrapped:
    /// this crate never panics while holding a lock).
    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }
    }

    /// loom's condition variable with the by-value guard API.
    #[derive(Debug, Default)]
    pub(crate) struct Condvar(loom::sync::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Self {
            Self(loom::sync::Condvar::new())
        }

        pub(crate) fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
            self.0.wait(guard).unwrap_or_else(|e| e.into_inner())
        }

        pub(crate) fn notify_one(&self) {
            self.0.notify_one();
        }
    }
}
