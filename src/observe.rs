//! Seeing what the tree does: counters (always on, for [`stats()`]), and the
//! optional `metrics` and `tracing` facades.
//!
//! Every hook is called only from `node.rs`: at creation, at each way a
//! context ends, and when a deadline fires. Without the features, a hook is one increment of a counter in the
//! calling thread's own shard: a plain load and store (the thread is its
//! only writer), no locked instruction and no cache line shared between
//! threads.
//!
//! [`stats()`]: crate::stats()

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Cause, Error};
use crate::node::CancelNode;
use crate::sync::stat::{AtomicU64, Mutex, Ordering};

/// How a context came to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// Its guard canceled it (`cancel`, `cancel_with_cause` or drop).
    Explicit,
    /// Its own deadline passed (or had passed at construction).
    Deadline,
    /// An ancestor ended (or had ended at construction).
    Parent,
}

impl End {
    #[cfg(feature = "tracing")]
    fn as_str(self) -> &'static str {
        match self {
            End::Explicit => "explicit",
            End::Deadline => "deadline",
            End::Parent => "parent",
        }
    }
}

/// One thread's counters. Only the owning thread writes them, with a load
/// and a store (no read-modify-write, so no locked instruction on the hot
/// path); [`counts`] reads them from anywhere.
#[repr(align(128))]
#[derive(Default)]
struct Shard {
    created: AtomicU64,
    explicit: AtomicU64,
    deadline: AtomicU64,
    parent: AtomicU64,
}

impl Shard {
    fn totals(&self) -> [u64; 4] {
        // Relaxed: statistics.
        [&self.created, &self.explicit, &self.deadline, &self.parent]
            .map(|c| c.load(Ordering::Relaxed))
    }
}

/// The shards of live threads, and the totals of the threads that exited.
struct Registry {
    live: Vec<Arc<Shard>>,
    retired: [u64; 4],
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    live: Vec::new(),
    retired: [0; 4],
});

/// Where a thread counts once its own shard is gone (its thread-locals are
/// being destroyed): shared, so with read-modify-writes.
static FALLBACK: Shard = Shard {
    created: AtomicU64::new(0),
    explicit: AtomicU64::new(0),
    deadline: AtomicU64::new(0),
    parent: AtomicU64::new(0),
};

/// A thread's registered shard; its drop (at thread exit) folds the counts
/// into `retired`, under the same lock `counts` reads under, so no count is
/// ever seen twice or missed.
struct Local(Arc<Shard>);

impl Local {
    fn register() -> Local {
        let shard = Arc::new(Shard::default());
        REGISTRY.lock().live.push(shard.clone());
        Local(shard)
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        let mut registry = REGISTRY.lock();
        registry.live.retain(|s| !Arc::ptr_eq(s, &self.0));
        for (total, n) in registry.retired.iter_mut().zip(self.0.totals()) {
            *total += n;
        }
    }
}

thread_local! {
    static LOCAL: Local = Local::register();
}

/// Adds one to the counter `pick` selects, in this thread's shard.
fn count(pick: impl Fn(&Shard) -> &AtomicU64) {
    let counted = LOCAL.try_with(|local| {
        let counter = pick(&local.0);
        // Relaxed, and not a read-modify-write: this thread is the only
        // writer of its shard.
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    });
    if counted.is_err() {
        // Relaxed: a statistic.
        pick(&FALLBACK).fetch_add(1, Ordering::Relaxed);
    }
}

/// Totals since the process started, from [`stats()`](crate::stats()).
///
/// A context's end is counted before it can be seen done: once
/// [`is_done()`](crate::Context::is_done) is `true` (or `wait_done()` has
/// returned), a later `stats()` on any thread includes it. (The `metrics`
/// and `tracing` hooks run just after, outside the context's lock, so a
/// metrics scrape may trail by a moment.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ContextCounts {
    /// Cancelable contexts created (`with_cancel`, `with_timeout`, ...).
    pub created: u64,
    /// Ended by their guard (`cancel`, `cancel_with_cause`, drop).
    pub canceled: u64,
    /// Ended by their own deadline: the deadline-exceeded count.
    pub deadline_exceeded: u64,
    /// Ended because an ancestor ended.
    pub parent_ended: u64,
}

impl ContextCounts {
    /// Contexts created and not ended yet (live, or dropped while live).
    pub fn not_ended(&self) -> u64 {
        self.created
            .saturating_sub(self.canceled + self.deadline_exceeded + self.parent_ended)
    }
}

pub(crate) fn counts() -> ContextCounts {
    let registry = REGISTRY.lock();
    let mut sum = registry.retired;
    let shards = registry.live.iter().map(|s| &**s).chain([&FALLBACK]);
    for shard in shards {
        for (total, n) in sum.iter_mut().zip(shard.totals()) {
            *total += n;
        }
    }
    drop(registry);
    let [created, canceled, deadline_exceeded, parent_ended] = sum;
    ContextCounts {
        created,
        canceled,
        deadline_exceeded,
        parent_ended,
    }
}

/// A cancelable context was created.
pub(crate) fn created() {
    count(|s| &s.created);
    #[cfg(feature = "metrics")]
    metrics::counter!("cancelctx_contexts_created_total").increment(1);
}

/// A context ended `how`: counted by whoever wins `mark`, before the done
/// bits are published, so a context seen done is already in [`counts`].
pub(crate) fn count_ended(how: End) {
    count(|s| match how {
        End::Explicit => &s.explicit,
        End::Deadline => &s.deadline,
        End::Parent => &s.parent,
    });
}

/// `node` ended (it won `mark`, which counted it): report it to the
/// `metrics` and `tracing` hooks, with no lock held (they run user code).
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(crate) fn ended(node: &CancelNode, err: Error, how: End, cause: &Cause) {
    ended_named(|| node.name(), err, how, cause);
}

/// [`ended`] for a caller that knows the node's name (`name`, called only if
/// the `tracing` event is enabled).
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(crate) fn ended_named<'a>(
    name: impl Fn() -> Option<&'a str>,
    err: Error,
    how: End,
    cause: &Cause,
) {
    // Literal labels: the macro then builds a static key (no allocation).
    #[cfg(feature = "metrics")]
    match how {
        End::Explicit => metrics::counter!("cancelctx_contexts_ended_total", "kind" => "explicit"),
        End::Deadline => metrics::counter!("cancelctx_contexts_ended_total", "kind" => "deadline"),
        End::Parent => metrics::counter!("cancelctx_contexts_ended_total", "kind" => "parent"),
    }
    .increment(1);
    #[cfg(feature = "tracing")]
    tracing::debug!(
        target: "cancelctx",
        name = name().unwrap_or(""),
        kind = how.as_str(),
        error = %err,
        cause = %cause,
        "context ended"
    );
}

/// A context's own deadline fired, `lateness` after it (on the timer thread).
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn deadline_fired(lateness: Duration) {
    #[cfg(feature = "metrics")]
    metrics::histogram!("cancelctx_deadline_lateness_seconds").record(lateness.as_secs_f64());
}
