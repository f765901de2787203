//! The handle to one scheduled entry.

use std::fmt;

use crate::queue::Key;
use crate::timer::{Timer, TimerRef};

/// One scheduled entry, returned by [`Timer::schedule`] and
/// [`Timer::schedule_alarm`].
///
/// Holds a handle to its timer (nothing at all for [`Timer::global`]'s
/// entries) plus the entry's key (slot index and generation), so it is small
/// (24 bytes on 64-bit targets, and so is `Option<Entry>`), `Send + Sync`,
/// and keeps the timer's thread alive. **Dropping an `Entry` does not cancel it**: the entry stays
/// scheduled and fires as usual. Call [`cancel`](Entry::cancel) to remove it.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use cancelctx_timer::Timer;
///
/// let timer = Timer::manual();
/// let t0 = Instant::now();
/// let entry = timer.schedule(t0 + Duration::from_secs(1), || unreachable!());
/// assert!(entry.is_pending());
/// assert!(entry.cancel());
/// assert!(!entry.cancel()); // already canceled
/// assert_eq!(timer.fire_due(t0 + Duration::from_secs(2)), 0);
/// ```
pub struct Entry {
    timer: TimerRef,
    key: Key,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Entry {
    pub(crate) fn new(timer: TimerRef, key: Key) -> Self {
        Self { timer, key }
    }

    /// Removes the entry from its shard's heap (O(log n)) so it never fires.
    ///
    /// Returns `true` iff this call removed it: `false` if it has already
    /// fired or is firing (its callback may be running right now on another
    /// thread), or was already canceled. Exactly one of "a `cancel` returned
    /// `true`" and "the callback ran" happens. The removed callback (closure
    /// captures, waker, `Weak`) is dropped on the calling thread, outside the
    /// timer's locks.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Instant;
    /// use cancelctx_timer::Timer;
    ///
    /// let timer = Timer::manual();
    /// let now = Instant::now();
    /// let entry = timer.schedule(now, || {});
    /// timer.fire_due(now);
    /// assert!(!entry.cancel(), "too late: it fired");
    /// ```
    pub fn cancel(&self) -> bool {
        let removed = self.timer.get().shared().cancel(self.key);
        let canceled = removed.is_some();
        drop(removed);
        canceled
    }

    /// `true` while the entry is scheduled: not yet fired (taken off the heap)
    /// nor canceled. Briefly takes its shard's lock; the answer may be stale
    /// by the time it is used.
    pub fn is_pending(&self) -> bool {
        self.timer.get().shared().contains(self.key)
    }

    /// The timer this entry belongs to.
    pub fn timer(&self) -> &Timer {
        self.timer.get()
    }
}

#[cfg(all(test, not(loom), target_pointer_width = "64"))]
mod tests {
    use super::Entry;

    /// Three words, and `Option<Entry>` too (the key's sequence number is
    /// never 0): a timer pointer (none for the global timer), the slot index
    /// and the sequence number.
    #[test]
    fn entry_is_three_words() {
        assert_eq!(size_of::<Entry>(), 24);
        assert_eq!(size_of::<Option<Entry>>(), 24);
    }
}
