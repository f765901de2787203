//! [`stats()`]: a snapshot of the crate's background machinery.

use cancelctx_timer::Timer;

/// A snapshot of the crate's background machinery, from [`stats()`].
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Stats {
    /// Contexts created and how they ended, since the process started.
    pub contexts: crate::ContextCounts,
    /// The global timer's counters: deadlines armed now, fired, canceled,
    /// worst lateness.
    pub timer: cancelctx_timer::Stats,
    /// Callback-pool threads alive now.
    pub callback_threads: usize,
    /// `after_func` callbacks that panicked so far (each was reported on
    /// stderr).
    pub callbacks_panicked: usize,
}

/// A snapshot of the crate's background machinery: the timer thread and the
/// callback pool. Cheap: a few atomic loads and short locks.
///
/// ```
/// use std::time::Duration;
/// use cancelctx::Context;
///
/// let (_ctx, _guard) = Context::background().with_timeout(Duration::from_secs(60));
/// assert!(cancelctx::stats().timer.armed >= 1);
/// ```
pub fn stats() -> Stats {
    #[cfg(not(loom))]
    let (callback_threads, callbacks_panicked) = {
        let pool = crate::pool::Pool::global();
        (pool.threads(), pool.panicked())
    };
    #[cfg(loom)]
    let (callback_threads, callbacks_panicked) = (0, 0);
    Stats {
        contexts: crate::observe::counts(),
        timer: Timer::global().stats(),
        callback_threads,
        callbacks_panicked,
    }
}

impl Stats {
    /// Sets the `metrics` gauges from this snapshot (feature `metrics`):
    /// `cancelctx_timer_armed` (deadlines in the heap),
    /// `cancelctx_callback_threads` and `cancelctx_contexts_not_ended`.
    /// Gauges are snapshots, so call this before each scrape or on a
    /// schedule; the counters and the lateness histogram need no call.
    ///
    /// ```
    /// cancelctx::stats().record_gauges();
    /// ```
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn record_gauges(&self) {
        metrics::gauge!("cancelctx_timer_armed").set(self.timer.armed as f64);
        metrics::gauge!("cancelctx_callback_threads").set(self.callback_threads as f64);
        metrics::gauge!("cancelctx_contexts_not_ended").set(self.contexts.not_ended() as f64);
    }
}
