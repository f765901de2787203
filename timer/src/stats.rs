//! Counters describing a timer's activity.

use std::time::Duration;

/// A snapshot of a timer's counters, from [`Timer::stats`](crate::Timer::stats).
///
/// The counters are plain integers kept per shard under the shard's lock
/// (and, for `wakeups` and `panicked`, under the thread's park lock), so they
/// cost nothing extra on the hot paths. A snapshot holds every shard lock at
/// once while it sums them, so `armed`, `scheduled`, `fired` and `canceled`
/// are exact and mutually consistent (`armed == scheduled - fired -
/// canceled` while the timer runs). Totals count since the timer was created.
///
/// # Examples
///
/// ```
/// use std::time::Instant;
/// use cancelctx_timer::Timer;
///
/// let timer = Timer::manual();
/// let now = Instant::now();
/// let a = timer.schedule(now, || {});
/// let _b = timer.schedule(now, || {});
/// assert!(a.cancel());
/// timer.fire_due(now);
///
/// let stats = timer.stats();
/// assert_eq!(stats.armed, 0);
/// assert_eq!(stats.scheduled, 2);
/// assert_eq!(stats.canceled, 1);
/// assert_eq!(stats.fired, 1);
/// assert_eq!(stats.panicked, 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Entries scheduled and not yet fired or canceled (the heap's length now).
    pub armed: usize,
    /// Entries ever scheduled.
    pub scheduled: u64,
    /// Entries fired (taken off the heap to run). An alarm whose `Weak` was
    /// dead and a callback that panicked both count as fired.
    pub fired: u64,
    /// Entries removed by a successful [`Entry::cancel`](crate::Entry::cancel),
    /// including entries removed by dropping or resetting a
    /// [`Sleep`](crate::Sleep).
    pub canceled: u64,
    /// Callbacks (closures, alarms or wakers) that panicked. The panic is
    /// caught; the timer keeps running.
    pub panicked: u64,
    /// The worst lateness seen: the largest `now - deadline` at the moment an
    /// entry was taken off the heap to fire (`now` being the clock read after
    /// the timer thread woke, or the `now` passed to
    /// [`Timer::fire_due`](crate::Timer::fire_due)). Entries never fire early,
    /// so this is never negative.
    pub worst_lateness: Duration,
    /// How many times the timer thread returned from a wait (timeouts,
    /// notifications for a new earliest deadline, and spurious wake-ups). Zero
    /// for a manual timer.
    pub wakeups: u64,
}

/// The counters of one shard, kept under its lock.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) scheduled: u64,
    pub(crate) fired: u64,
    pub(crate) canceled: u64,
    pub(crate) worst_lateness: Duration,
}

impl Counters {
    /// Adds this shard's counters (and its `armed` entries) to `stats`.
    pub(crate) fn add_to(&self, armed: usize, stats: &mut Stats) {
        stats.armed += armed;
        stats.scheduled += self.scheduled;
        stats.fired += self.fired;
        stats.canceled += self.canceled;
        stats.worst_lateness = stats.worst_lateness.max(self.worst_lateness);
    }
}
