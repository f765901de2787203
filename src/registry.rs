//! The live registry and leak detector (feature `registry`): every live
//! cancelable context, listable as a tree, and a check for tests that
//! contexts created in a scope are gone at its end — goleak's idea, for
//! contexts.
//!
//! Each cancelable context enters a sharded registry when created and leaves
//! it when dropped: two short, rarely contended lock acquisitions on entry
//! and two on exit, which is why this is a feature (see `docs/benchmarks.md` for the
//! cost). Only cancelable contexts (`with_cancel`, `with_timeout`,
//! `with_deadline`) are registered: value links own no resources.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use cancelctx::{Context, registry};
//!
//! let check = registry::LeakCheck::start();
//! {
//!     let (ctx, _guard) = Context::background().named("request").with_timeout(Duration::from_secs(5));
//!     let listing = registry::snapshot().to_string();
//!     assert!(listing.contains("request"), "{listing}");
//!     # drop(ctx);
//! }
//! check.assert_clean(); // everything created since `start` is gone
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::node::CancelNode;
use crate::sync::Mutex;
use crate::sync::stat::{AtomicU64, AtomicUsize, Ordering};

const SHARDS: usize = 8;

/// Per-node registry bookkeeping.
pub(crate) struct Meta {
    created: Instant,
    seq: u64,
    shard: usize,
    /// Index in the shard's slab; written and read under the shard's lock.
    slot: AtomicUsize,
}

struct Registry {
    shards: [Mutex<Vec<Option<Weak<CancelNode>>>>; SHARDS],
    free: [Mutex<Vec<usize>>; SHARDS],
    seq: AtomicU64,
}

fn registry() -> &'static Registry {
    static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(|| Registry {
        shards: std::array::from_fn(|_| Mutex::new(Vec::new())),
        free: std::array::from_fn(|_| Mutex::new(Vec::new())),
        seq: AtomicU64::new(0),
    })
}

impl Meta {
    pub(crate) fn new() -> Meta {
        // Relaxed: a unique number; order between threads does not matter.
        let seq = registry().seq.fetch_add(1, Ordering::Relaxed);
        Meta {
            created: Instant::now(),
            seq,
            shard: (seq as usize) % SHARDS,
            slot: AtomicUsize::new(usize::MAX),
        }
    }
}

/// Enters `node` into the registry.
pub(crate) fn insert(node: &Arc<CancelNode>) {
    let meta = &node.meta;
    let reg = registry();
    let free = reg.free[meta.shard].lock().pop();
    let mut slab = reg.shards[meta.shard].lock();
    let idx = match free {
        Some(idx) => {
            slab[idx] = Some(Arc::downgrade(node));
            idx
        }
        None => {
            slab.push(Some(Arc::downgrade(node)));
            slab.len() - 1
        }
    };
    // Relaxed: read under the same shard lock in `remove`.
    meta.slot.store(idx, Ordering::Relaxed);
}

/// Removes a dropped node.
pub(crate) fn remove(meta: &Meta) {
    let reg = registry();
    let mut slab = reg.shards[meta.shard].lock();
    // Relaxed: written under this same lock.
    let idx = meta.slot.swap(usize::MAX, Ordering::Relaxed);
    let Some(entry) = slab.get_mut(idx) else {
        return;
    };
    let weak = entry.take();
    drop(slab);
    drop(weak);
    reg.free[meta.shard].lock().push(idx);
}

/// One live context in a [`Snapshot`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LiveContext {
    /// Unique per process, in creation order.
    pub id: u64,
    /// The nearest cancelable ancestor's `id`, if it is registered too.
    pub parent: Option<u64>,
    /// The context's name (see [`Context::named`](crate::Context::named)).
    pub name: Option<String>,
    /// The context's `Display` segment kind: `WithCancel` or `WithDeadline`.
    pub kind: &'static str,
    /// Time since creation.
    pub age: Duration,
    /// Time until the deadline, if any (zero once past).
    pub remaining: Option<Duration>,
    /// `None` while live.
    pub err: Option<Error>,
    /// Futures and threads waiting on it now.
    pub waiters: usize,
    /// Registered children and `after_func` callbacks.
    pub children: usize,
}

/// Every registered context alive at one moment; `Display` prints a tree.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Snapshot {
    /// In creation order.
    pub contexts: Vec<LiveContext>,
}

/// Lists every cancelable context alive now.
pub fn snapshot() -> Snapshot {
    snapshot_since(0)
}

fn snapshot_since(seq: u64) -> Snapshot {
    let reg = registry();
    let mut nodes = Vec::new();
    for shard in &reg.shards {
        let slab = shard.lock();
        nodes.extend(slab.iter().flatten().filter_map(Weak::upgrade));
    }
    // Dropping the upgraded nodes may drop contexts: no lock is held here.
    // In creation order: a parent before its children.
    nodes.sort_by_key(|n| n.meta.seq);
    let now = Instant::now();
    // Each node's name and parent from its own segment of the chain (up to
    // the nearest cancelable ancestor), the rest from that ancestor's entry:
    // a name looked up to the root per node made a deep chain quadratic.
    let mut names: HashMap<u64, Option<&str>> = HashMap::with_capacity(nodes.len());
    let mut contexts = Vec::new();
    for n in &nodes {
        let (named, parent) = n.parent.segment();
        let name = match (named, parent) {
            // A `named` link: its name is its own, found at once.
            (Some(link), _) => link.name(),
            (None, Some(p)) => match names.get(&p.meta.seq) {
                Some(name) => *name,
                // Not listed (created after its shard was read): walk.
                None => p.name(),
            },
            (None, None) => None,
        };
        names.insert(n.meta.seq, name);
        if n.meta.seq < seq {
            continue;
        }
        contexts.push(LiveContext {
            id: n.meta.seq,
            parent: parent.map(|p| p.meta.seq),
            name: name.map(str::to_owned),
            kind: if n.own_deadline {
                "WithDeadline"
            } else {
                "WithCancel"
            },
            age: now.saturating_duration_since(n.meta.created),
            remaining: n.deadline.map(|d| d.saturating_duration_since(now)),
            err: n.err(),
            waiters: n.waiter_count(),
            children: n.child_count(),
        });
    }
    drop(names);
    drop(nodes);
    Snapshot { contexts }
}

impl fmt::Display for Snapshot {
    /// One line per context, children indented under their parents.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: HashMap<u64, usize> = self
            .contexts
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id, i))
            .collect();
        let mut children: HashMap<Option<u64>, Vec<usize>> = HashMap::new();
        for (i, c) in self.contexts.iter().enumerate() {
            let parent = c.parent.filter(|p| ids.contains_key(p));
            children.entry(parent).or_default().push(i);
        }
        /// Levels indented; deeper ones say their depth.
        const MAX_INDENT: usize = 32;
        writeln!(f, "{} live context(s):", self.contexts.len())?;
        // Depth-first with an explicit stack: no recursion on deep trees.
        let mut stack: Vec<(usize, usize)> = children
            .get(&None)
            .into_iter()
            .flatten()
            .rev()
            .map(|&i| (i, 0))
            .collect();
        while let Some((i, depth)) = stack.pop() {
            let c = &self.contexts[i];
            // Indented by depth up to a cap (a width is a `u16`, and a
            // million-deep chain must not print a quadratic listing).
            write!(f, "{:indent$}", "", indent = depth.min(MAX_INDENT) * 2)?;
            if depth > MAX_INDENT {
                write!(f, "[depth {depth}] ")?;
            }
            write!(f, "#{} {}", c.id, c.kind)?;
            if let Some(name) = &c.name {
                write!(f, " {name:?}")?;
            }
            write!(f, " age={:?}", c.age)?;
            if let Some(r) = c.remaining {
                write!(f, " remaining={r:?}")?;
            }
            match c.err {
                Some(err) => write!(f, " done({err})")?,
                None => write!(f, " live")?,
            }
            writeln!(f, " waiters={} children={}", c.waiters, c.children)?;
            if let Some(kids) = children.get(&Some(c.id)) {
                stack.extend(kids.iter().rev().map(|&k| (k, depth + 1)));
            }
        }
        Ok(())
    }
}

/// A leak check for tests: contexts created after [`start`](LeakCheck::start)
/// must all be gone (dropped) by [`check`](LeakCheck::check).
///
/// The check is process-wide, like goleak's: contexts that other threads
/// create meanwhile count too. Run leak-checked tests one at a time (a
/// shared mutex, `--test-threads=1`, or cargo-nextest's process per test).
#[derive(Debug)]
pub struct LeakCheck {
    since: u64,
}

impl LeakCheck {
    /// Starts watching contexts created from now on.
    pub fn start() -> LeakCheck {
        // Relaxed: contexts created by other threads concurrently with `start`
        // may or may not count; the check is for a test's own work.
        LeakCheck {
            since: registry().seq.load(Ordering::Relaxed),
        }
    }

    /// `Err` with a listing of the contexts created since `start` that are
    /// still alive (observable somewhere) or still waited on.
    ///
    /// # Errors
    ///
    /// The [`Snapshot`] of the leaked contexts.
    pub fn check(&self) -> Result<(), Snapshot> {
        let leaked = snapshot_since(self.since);
        if leaked.contexts.is_empty() {
            Ok(())
        } else {
            Err(leaked)
        }
    }

    /// Like [`check`](LeakCheck::check), waiting up to `patience` for
    /// contexts other threads are about to drop.
    ///
    /// # Errors
    ///
    /// The [`Snapshot`] of the contexts still leaked after `patience`.
    pub fn check_within(&self, patience: Duration) -> Result<(), Snapshot> {
        let start = Instant::now();
        loop {
            match self.check() {
                Err(leaked) if start.elapsed() >= patience => return Err(leaked),
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
                Ok(()) => return Ok(()),
            }
        }
    }

    /// Panics with the listing if [`check`](LeakCheck::check) fails.
    ///
    /// # Panics
    ///
    /// If a context created since `start` is still alive.
    #[track_caller]
    pub fn assert_clean(&self) {
        if let Err(leaked) = self.check() {
            // Formatted before panicking: a panic while formatting the panic
            // message would abort.
            let listing = leaked.to_string();
            panic!("contexts leaked:\n{listing}");
        }
    }
}
