//! State shared by a timer's handles, its entries and its thread: the
//! sharded queue and the thread's park state.
//!
//! # Shards
//!
//! The entries live in `N` shards (a power of two, at most [`MAX_SHARDS`];
//! one for a manual timer), each a `Mutex` around its own [`Queue`] and
//! counters, on its own cache line. A thread always schedules on its *home*
//! shard, `thread_index() & (N - 1)` (indices are handed out round-robin), so
//! threads scheduling concurrently take different locks; a cancel goes to the
//! shard recorded in its key. Entries never move between shards.
//!
//! # Locks
//!
//! A shard lock is held only for queue operations and counter updates; the
//! park lock (`park`) only for the driver's park decision and by inserters
//! that must wake it. No callback, waker or user `Drop` runs under any of them
//! (values leaving a queue are returned and dropped after the guard). Only
//! [`Shared::stats`] holds several locks: every shard lock, taken in index
//! order. The park lock is never held together with a shard lock.
//!
//! # Waking the thread (no lost wake-up)
//!
//! The thread parks until the earliest deadline it saw while scanning the
//! shards. An insert that becomes its shard's new earliest entry may be
//! earlier than that, so the thread publishes its state in `wake_at`, which
//! inserters read without a lock:
//!
//! * `UNBOUNDED` (`u64::MAX`): scanning, or parked with nothing scheduled —
//!   any new shard top must wake it;
//! * `encode(t)`: parked until `t` — only an entry with `at < t` must wake
//!   it (tested as `must_wake(encode(at), encode(t))`: `encode` is exact to
//!   the nanosecond, and clamped values count as possibly earlier), so
//!   steady timeouts, due at or after the earliest one, cost no lock and no
//!   futex wake;
//! * `NOTIFIED` (0): a wake-up is already pending (`dirty` is set) — nothing
//!   to do.
//!
//! Every store to `wake_at` happens under the park lock, together with
//! `dirty` (`wake_at == NOTIFIED` iff `dirty`). Each driver turn is: under
//! the park lock, clear `dirty` and store `UNBOUNDED` (*begin*); scan the
//! shards, firing what is due; under the park lock again, rescan if `dirty`,
//! else store `encode(until)`, set `waiting` and wait on the condvar (which
//! releases the lock atomically). An inserter whose entry is a new shard top
//! loads `wake_at` and, if it must, takes the park lock, sets `dirty` and
//! `NOTIFIED`, and notifies if `waiting`.
//!
//! Why no insert is missed: if the thread's last look at shard `s` (under its
//! lock) preceded the insert into `s`, then *begin* → that unlock → the
//! insert's lock → its load is a happens-before chain, so by coherence the
//! load returns *begin*'s `UNBOUNDED` or a later store: that turn's
//! `encode(until)` (so the insert wakes it if `at < until`), a `NOTIFIED`
//! (`dirty` is set and stays set until the next turn's *begin*: the thread
//! either sees it before parking or was `waiting` and got that notifier's
//! notify), or a later turn's value (the thread already left this park). An
//! inserter that takes the park lock does so after *begin*; it either lands
//! before the check (the thread sees `dirty` and rescans) or while the thread
//! waits (it sees `waiting` and notifies; the waiter was registered before the
//! lock was released), and the thread goes from a wake-up straight to the
//! next *begin* without releasing the lock. Inserts that do not become a
//! shard top are covered by the top they sit behind, and removals only make
//! the thread wake early. All of this rests on the locks' release/acquire
//! edges, so `wake_at` itself needs only `Relaxed`; the loom models check it
//! (and that a driver releasing the lock before waiting, or not marking its
//! scan, deadlocks).

use std::ops::Deref;
use std::sync::atomic::Ordering::Relaxed;
use std::task::Waker;
use std::time::Instant;

use crate::callback::{Callback, run_batch};
use crate::queue::{Key, MAX_SLOTS, Queue, earliest_base, nanos_since};
use crate::stats::{Counters, Stats};
use crate::sync::{AtomicU8, AtomicU64, Condvar, Mutex, MutexGuard, thread_index};

#[cfg(all(test, not(loom)))]
mod tests;

/// Most entries fired per shard-lock acquisition: bounds how long inserters
/// and cancelers can be kept waiting by a burst of due entries.
pub(crate) const BATCH: usize = 256;

/// Most shards per timer (a shard's queue id is its index).
pub(crate) const MAX_SHARDS: usize = crate::queue::MAX_IDS;

/// `wake_at`: a wake-up is pending; inserters need not do anything.
const NOTIFIED: u64 = 0;
/// `wake_at`: scanning, or parked with nothing scheduled.
const UNBOUNDED: u64 = u64::MAX;
/// Smallest `encode` value (`at <= base`).
const ENCODED_MIN: u64 = 1;
/// Largest `encode` value (clamped far future).
const ENCODED_MAX: u64 = u64::MAX - 1;

/// Fault injection for a loom self-check: a driver that does not mark its
/// scan in `wake_at` must fail the models (set only by that test).
#[cfg(all(loom, test))]
pub(crate) static FAULT_NO_SCAN_MARK: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Who drives the timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Mode {
    /// No thread, ever: only `fire_due` fires entries.
    Manual,
    /// A thread will be spawned by the first insert.
    Idle,
    /// An inserter has claimed the spawn and is spawning the thread.
    Spawning,
    /// The thread is running.
    Running,
    /// The thread has exited after shutdown.
    Stopped,
}

impl Mode {
    fn from_u8(raw: u8) -> Mode {
        [
            Mode::Manual,
            Mode::Idle,
            Mode::Spawning,
            Mode::Running,
            Mode::Stopped,
        ][usize::from(raw)]
    }
}

/// Aligns its content to its own cache lines (128 bytes: adjacent-line
/// prefetching pairs 64-byte lines), so shards do not share lines.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct Padded<T>(T);

impl<T> Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// One shard: a queue and its counters.
#[derive(Debug)]
pub(crate) struct ShardState {
    pub(crate) queue: Queue<Callback>,
    pub(crate) counters: Counters,
}

impl ShardState {
    /// Pops into `out` up to [`BATCH`] entries due at `now` that order before
    /// `bound` (the earliest top of the other shards, with its index; ties
    /// go to the lower index, this shard being `me`), and accounts for them.
    fn pop_due(
        &mut self,
        now: Instant,
        bound: Option<(Instant, usize)>,
        me: usize,
        out: &mut Vec<(Instant, Callback)>,
    ) -> usize {
        debug_assert!(out.is_empty());
        let n = self.queue.pop_while(out, BATCH, |deadline| {
            deadline <= now && bound.is_none_or(|other| (deadline, me) < other)
        });
        if let Some(&(earliest, _)) = out.first() {
            // Popped in deadline order: the first one is the latest to fire.
            let late = now.saturating_duration_since(earliest);
            self.counters.worst_lateness = self.counters.worst_lateness.max(late);
            self.counters.fired += n as u64;
        }
        n
    }
}

/// The thread's side, under the park lock.
#[derive(Debug)]
pub(crate) struct ParkState {
    /// Set when the last [`crate::Timer`] handle (and so the last entry) is gone.
    pub(crate) shutdown: bool,
    /// An insert the thread may have missed happened since its turn began:
    /// rescan before parking. (`wake_at == NOTIFIED` iff set.)
    pub(crate) dirty: bool,
    /// The thread is blocked in its park (a notify is needed to wake it).
    pub(crate) waiting: bool,
    pub(crate) wakeups: u64,
    pub(crate) panicked: u64,
}

/// The shards, the park lock and the condition variable the thread parks on.
#[derive(Debug)]
pub(crate) struct Shared {
    shards: Box<[Padded<Mutex<ShardState>>]>,
    /// `shards.len() - 1` (a power of two minus one).
    mask: usize,
    /// `Mode::Manual`, fixed: inserts then skip the mode and `wake_at` loads
    /// (nothing to spawn or wake; fewer loom schedule points in models of
    /// code using manual timers).
    manual: bool,
    /// A [`Mode`].
    mode: AtomicU8,
    /// The thread's published park state (see the module docs).
    wake_at: AtomicU64,
    /// Origin of `encode` and of the shards' queues.
    base: Instant,
    pub(crate) park: Padded<Mutex<ParkState>>,
    /// Waited on by the timer thread only.
    pub(crate) cv: Condvar,
}

/// Shards for a threaded timer: twice the available parallelism (fewer
/// collisions between threads handed neighbouring indices), a power of two,
/// at most [`MAX_SHARDS`]. Computed once per process.
fn default_shards() -> usize {
    static SHARDS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *SHARDS.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        cpus.saturating_mul(2).next_power_of_two().min(MAX_SHARDS)
    })
}

impl Shared {
    pub(crate) fn new(mode: Mode) -> Self {
        // A manual timer is for deterministic tests: one shard keeps strict
        // FIFO order among equal deadlines across threads.
        let shards = if mode == Mode::Manual {
            1
        } else {
            default_shards()
        };
        // As far back as possible: deadlines before `base` would saturate to
        // it (see `queue.rs`), and times after it are exact for 292 years.
        Self::with_shards(mode, shards, earliest_base(Instant::now()))
    }

    /// A timer state with `shards` shards (a power of two, at most
    /// [`MAX_SHARDS`]); `base` is the origin of the queues' deadlines and of
    /// the published park time. It should be at or before every deadline and
    /// every `now` to come: an earlier deadline is taken as due at `base`.
    pub(crate) fn with_shards(mode: Mode, shards: usize, base: Instant) -> Self {
        assert!(shards.is_power_of_two() && shards <= MAX_SHARDS);
        let manual = mode == Mode::Manual;
        Self {
            shards: (0..shards)
                .map(|id| {
                    Padded(Mutex::new(ShardState {
                        queue: Queue::with_id(id, base),
                        counters: Counters::default(),
                    }))
                })
                .collect(),
            mask: shards - 1,
            manual,
            mode: AtomicU8::new(mode as u8),
            // A manual timer has no thread to wake (and inserts do not look).
            wake_at: AtomicU64::new(if manual { NOTIFIED } else { UNBOUNDED }),
            base,
            park: Padded(Mutex::new(ParkState {
                shutdown: false,
                dirty: manual,
                waiting: false,
                wakeups: 0,
                panicked: 0,
            })),
            cv: Condvar::new(),
        }
    }

    #[cfg(test)]
    pub(crate) fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The calling thread's shard.
    pub(crate) fn home_shard(&self) -> usize {
        thread_index() & self.mask
    }

    fn shard(&self, index: usize) -> MutexGuard<'_, ShardState> {
        self.shards[index].lock()
    }

    /// Relaxed: the mode only decides who spawns the thread (a
    /// compare-exchange, atomic at any ordering) and whether an inserter
    /// waits for a spawn. It goes `Idle` → `Spawning` → `Idle` (failed) or
    /// `Running`, never back from `Running`; so a stale read, an earlier
    /// value, only sends an inserter to wait and read again.
    pub(crate) fn mode(&self) -> Mode {
        Mode::from_u8(self.mode.load(Relaxed))
    }

    /// `at` as nanoseconds since `base`, plus one, clamped to
    /// `ENCODED_MIN..=ENCODED_MAX` (`at <= base` and `at` some 584 years
    /// after it): monotone (non-decreasing) in `at`, strictly so between the
    /// clamps (`Instant`s are nanosecond-exact), never `NOTIFIED` nor
    /// `UNBOUNDED`.
    fn encode(&self, at: Instant) -> u64 {
        nanos_since(self.base, at).min(ENCODED_MAX - 1) + 1
    }

    /// Schedules `callback` at `at` on the calling thread's shard. Returns its
    /// key and `true` if the caller has claimed the job of spawning the
    /// thread (mode was `Idle`, now `Spawning`).
    ///
    /// # Panics
    ///
    /// If the shard already holds [`MAX_SLOTS`] (2^32 - 1) live entries; the
    /// callback is then dropped (outside the lock) and nothing changes.
    pub(crate) fn insert(&self, at: Instant, callback: Callback) -> (Key, bool) {
        self.insert_on(self.home_shard(), at, callback)
    }

    /// [`Shared::insert`] on shard `shard` (`< shard_count()`).
    pub(crate) fn insert_on(&self, shard: usize, at: Instant, callback: Callback) -> (Key, bool) {
        let spawn = !self.manual && self.claim_spawn();
        let mut st = self.shard(shard);
        let (key, new_top) = match st.queue.try_insert(at, callback) {
            Ok(inserted) => inserted,
            Err(callback) => {
                drop(st);
                self.refuse_insert(spawn, callback)
            }
        };
        st.counters.scheduled += 1;
        drop(st);
        // Only a new shard top can be earlier than what the thread waits for.
        // Relaxed: ordered by the shard lock just taken (module docs).
        if new_top && !self.manual && must_wake(self.encode(at), self.wake_at.load(Relaxed)) {
            self.wake_driver();
        }
        (key, spawn)
    }

    /// A full shard: gives back the spawn job, drops `callback` (user code)
    /// with no lock held, and panics.
    #[cold]
    #[inline(never)]
    fn refuse_insert(&self, spawn: bool, callback: Callback) -> ! {
        if spawn {
            // Relaxed: as in `abort_spawn`.
            self.mode.store(Mode::Idle as u8, Relaxed);
        }
        drop(callback);
        panic!(
            "cancelctx-timer: a timer shard already holds {MAX_SLOTS} live entries, the most it can"
        );
    }

    /// Makes the thread rescan before it parks (or now, if it is parked).
    #[cold]
    fn wake_driver(&self) {
        let mut park = self.park.lock();
        if park.dirty {
            return; // a wake-up is already pending
        }
        park.dirty = true;
        // Relaxed: stored under the park lock with `dirty` (module docs).
        self.wake_at.store(NOTIFIED, Relaxed);
        let waiting = park.waiting;
        drop(park);
        // The waiter registered on the condvar before it released the lock,
        // so notifying after our unlock cannot miss it.
        if waiting {
            self.cv.notify_one();
        }
    }

    /// Driver, at the start of a turn (under the park lock): any insert from
    /// now on that becomes a shard top must mark the turn dirty.
    pub(crate) fn begin_turn(&self, park: &mut ParkState) {
        park.dirty = false;
        #[cfg(all(loom, test))]
        if FAULT_NO_SCAN_MARK.load(Relaxed) {
            return;
        }
        // Relaxed: inserters that need it are ordered after it by the shard
        // lock the scan takes next (module docs).
        self.wake_at.store(UNBOUNDED, Relaxed);
    }

    /// Driver, before parking until `until` (under the park lock, not dirty).
    pub(crate) fn publish_park(&self, park: &ParkState, until: Option<Instant>) {
        debug_assert!(!park.dirty);
        let encoded = until.map_or(UNBOUNDED, |t| self.encode(t));
        // Relaxed: only narrows who must wake us; a racing inserter that reads
        // an older value (`UNBOUNDED`) just takes the park lock.
        self.wake_at.store(encoded, Relaxed);
    }

    /// Driver, on its way out (under the park lock): no more wake-ups.
    pub(crate) fn stop(&self, park: &mut ParkState) {
        park.dirty = true;
        // Relaxed: nothing depends on seeing these (no thread left to wake).
        self.wake_at.store(NOTIFIED, Relaxed);
        self.mode.store(Mode::Stopped as u8, Relaxed);
    }

    /// Claims the job of spawning the thread if nobody has (mode `Idle` →
    /// `Spawning`).
    pub(crate) fn claim_spawn(&self) -> bool {
        // Relaxed: the mode publishes no data. An inserter that finds
        // `Spawning` or `Idle` after its insert waits for (or takes over) the
        // spawn: see `Timer::see_driven`.
        self.mode() == Mode::Idle
            && self
                .mode
                .compare_exchange(Mode::Idle as u8, Mode::Spawning as u8, Relaxed, Relaxed)
                .is_ok()
    }

    /// The claimed spawn succeeded: the thread runs.
    pub(crate) fn spawned(&self) {
        // Relaxed: as in `claim_spawn`. Nothing else leaves `Spawning`, and
        // `Stopped` needs the last handle gone, while the spawner holds one.
        self.mode.store(Mode::Running as u8, Relaxed);
    }

    /// Takes every remaining entry (for the caller to drop outside the locks).
    pub(crate) fn drain_into(&self, leftovers: &mut Vec<Callback>) {
        for shard in self.shards.iter() {
            shard.lock().queue.drain_into(leftovers);
        }
    }

    /// Undoes an insert whose thread spawn failed: removes the entry and lets
    /// another insert try spawning again (one that waits for this spawn, or a
    /// later one). The value is returned to be dropped
    /// outside the lock.
    pub(crate) fn abort_spawn(&self, key: Key) -> Option<Callback> {
        let mut st = self.shard(key.queue_id());
        let removed = st.queue.remove(key);
        if removed.is_some() {
            st.counters.scheduled -= 1;
        }
        drop(st);
        // Relaxed: a later compare-exchange claims the spawn; nothing else
        // is published with it.
        self.mode.store(Mode::Idle as u8, Relaxed);
        removed
    }

    /// Removes `key` if it is still scheduled, counting a cancellation. The
    /// value is returned so the caller drops it outside the lock.
    pub(crate) fn cancel(&self, key: Key) -> Option<Callback> {
        let mut st = self.shard(key.queue_id());
        let removed = st.queue.remove(key);
        if removed.is_some() {
            st.counters.canceled += 1;
        }
        removed
    }

    /// `true` if `key` is still scheduled.
    pub(crate) fn contains(&self, key: Key) -> bool {
        self.shard(key.queue_id()).queue.contains(key)
    }

    /// Makes `waker` the one a pending sleep entry wakes. Returns `false` if
    /// the entry is gone (it fired).
    ///
    /// Cloning and dropping wakers runs executor code that may re-enter this
    /// timer (e.g. dropping the last waker drops a task owning a `Sleep`), so
    /// both happen outside the lock: check, clone unlocked, then swap.
    pub(crate) fn register_waker(&self, key: Key, waker: &Waker) -> bool {
        {
            let mut st = self.shard(key.queue_id());
            match st.queue.get_mut(key) {
                None => return false,
                Some(Callback::Wake(current)) if current.will_wake(waker) => return true,
                Some(_) => {}
            }
        }
        let new = Callback::Wake(waker.clone());
        let mut st = self.shard(key.queue_id());
        let (old, pending) = match st.queue.get_mut(key) {
            Some(slot) => (std::mem::replace(slot, new), true),
            None => (new, false),
        };
        drop(st);
        drop(old);
        pending
    }

    /// Fires every entry due at `now` on the calling thread (see
    /// [`Shared::fire_pass`]). Returns how many fired.
    pub(crate) fn fire_due(&self, now: Instant) -> usize {
        self.fire_pass(now, &mut Vec::new()).0
    }

    /// Fires, on the calling thread, every entry due at `now`, including
    /// entries scheduled meanwhile, in `(deadline, shard)` order (FIFO within
    /// a shard): a k-way merge of the shard heaps, popping from the shard
    /// with the earliest top while it stays before the others' tops, at most
    /// [`BATCH`] per lock, callbacks run with no lock held. Returns how many
    /// fired and the earliest deadline left, each shard's read under its lock
    /// after the pass began.
    pub(crate) fn fire_pass(
        &self,
        now: Instant,
        batch: &mut Vec<(Instant, Callback)>,
    ) -> (usize, Option<Instant>) {
        let mut tops = [None; MAX_SHARDS];
        let tops = &mut tops[..self.shards.len()];
        let mut fired = 0;
        loop {
            for (top, shard) in tops.iter_mut().zip(self.shards.iter()) {
                *top = shard.lock().queue.next_deadline();
            }
            let before = fired;
            while let Some((first, me)) = earliest(tops, None).filter(|&(t, _)| t <= now) {
                let bound = earliest(tops, Some(me));
                let mut st = self.shard(me);
                let n = st.pop_due(now, bound, me, batch);
                tops[me] = st.queue.next_deadline();
                drop(st);
                // Nothing popped only if the top changed meanwhile.
                debug_assert!(n > 0 || tops[me] != Some(first));
                if n > 0 {
                    fired += n;
                    let panicked = run_batch(batch);
                    if panicked > 0 {
                        self.park.lock().panicked += panicked;
                    }
                }
            }
            if fired == before {
                return (fired, earliest(tops, None).map(|(t, _)| t));
            }
        }
    }

    /// The earliest deadline, if any (each shard read under its lock in turn).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let shards = self.shards.iter();
        shards.filter_map(|s| s.lock().queue.next_deadline()).min()
    }

    /// A consistent snapshot: every shard lock held at once (in index order).
    pub(crate) fn stats(&self) -> Stats {
        let mut stats = Stats::default();
        {
            // First: `panicked` is counted after `fired`, so it stays <= fired.
            let park = self.park.lock();
            stats.wakeups = park.wakeups;
            stats.panicked = park.panicked;
        }
        let guards: [Option<MutexGuard<'_, ShardState>>; MAX_SHARDS] =
            std::array::from_fn(|i| self.shards.get(i).map(|s| s.lock()));
        for st in guards.iter().flatten() {
            st.counters.add_to(st.queue.len(), &mut stats);
        }
        stats
    }

    /// Tells the thread (if any) to exit. Called when the last handle drops.
    pub(crate) fn shutdown(&self) {
        let mut park = self.park.lock();
        park.shutdown = true;
        let waiting = park.waiting;
        drop(park);
        if waiting {
            self.cv.notify_one();
        }
    }
}

/// Whether an entry encoded `at` may be due before the published `wake_at`
/// (an `encode`d park time, `UNBOUNDED` or `NOTIFIED`): `at < until`, where
/// the clamped encodings stand for a range and so also wake on equality.
/// Equal deadlines need no wake-up: the thread fires both at `until`.
fn must_wake(at: u64, wake_at: u64) -> bool {
    at < wake_at || (at == wake_at && (at == ENCODED_MIN || at == ENCODED_MAX))
}

/// The earliest `(deadline, shard)` among `tops`, skipping shard `except`.
fn earliest(tops: &[Option<Instant>], except: Option<usize>) -> Option<(Instant, usize)> {
    let candidates = tops.iter().enumerate().filter(|&(i, _)| Some(i) != except);
    candidates.filter_map(|(i, t)| t.map(|t| (t, i))).min()
}
