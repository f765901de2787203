//! Seeing what the tree does: counters (always on, for [`stats()`]), and the
//! optional `metrics` and `tracing` facades.
//!
//! Every hook is called by `node.rs` at one place: creation, end, deadline
//! fire. Without the features, a hook is two relaxed increments on a
//! per-thread shard (no shared cache line between threads).
//!
//! [`stats()`]: crate::stats()

use std::time::Duration;

use crate::error::{Cause, Error};
use crate::node::CancelNode;
use crate::sync::stat::{AtomicU64, AtomicUsize, Ordering};

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

const SHARDS: usize = 16;

/// One cache line of counters per shard.
#[repr(align(128))]
#[derive(Default)]
struct Shard {
    created: AtomicU64,
    explicit: AtomicU64,
    deadline: AtomicU64,
    parent: AtomicU64,
}

static COUNTERS: [Shard; SHARDS] = [const {
    Shard {
        created: AtomicU64::new(0),
        explicit: AtomicU64::new(0),
        deadline: AtomicU64::new(0),
        parent: AtomicU64::new(0),
    }
}; SHARDS];

fn shard() -> &'static Shard {
    use std::cell::Cell;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    let idx = INDEX
        .try_with(|i| {
            if i.get() == usize::MAX {
                // Relaxed: only spreads threads over shards.
                i.set(NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS);
            }
            i.get()
        })
        .unwrap_or(0);
    &COUNTERS[idx]
}

fn count(f: impl FnOnce(&Shard)) {
    f(shard());
}

/// Totals since the process started, from [`stats()`](crate::stats()).
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
    let mut c = ContextCounts::default();
    for s in &COUNTERS {
        // Relaxed: statistics.
        c.created += s.created.load(Ordering::Relaxed);
        c.canceled += s.explicit.load(Ordering::Relaxed);
        c.deadline_exceeded += s.deadline.load(Ordering::Relaxed);
        c.parent_ended += s.parent.load(Ordering::Relaxed);
    }
    c
}

/// A cancelable context was created.
pub(crate) fn created() {
    // Relaxed: a statistic.
    count(|s| {
        s.created.fetch_add(1, Ordering::Relaxed);
    });
    #[cfg(feature = "metrics")]
    metrics::counter!("cancelctx_contexts_created_total").increment(1);
}

/// `node` ended (it won `mark`): count it and report it.
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(crate) fn ended(node: &CancelNode, err: Error, how: End, cause: &Cause) {
    // Relaxed: statistics.
    count(|s| {
        let counter = match how {
            End::Explicit => &s.explicit,
            End::Deadline => &s.deadline,
            End::Parent => &s.parent,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    });
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
        name = node.name().unwrap_or(""),
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
