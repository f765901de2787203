//! Unit tests of the sharding: shard selection, keys across shards, the
//! merged firing order, exact stats, and the park-state decisions of inserts.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier, Mutex as StdMutex};
use std::time::Duration;

use super::*;

fn ms(base: Instant, n: u64) -> Instant {
    base + Duration::from_millis(n)
}

/// A callback that appends `n` to `log`.
fn record(log: &Arc<StdMutex<Vec<u64>>>, n: u64) -> Callback {
    let log = Arc::clone(log);
    Callback::Func(Box::new(move || log.lock().unwrap().push(n)))
}

fn noop() -> Callback {
    Callback::Func(Box::new(|| {}))
}

#[test]
fn shard_count_is_a_bounded_power_of_two() {
    let threaded = Shared::new(Mode::Idle);
    let n = threaded.shard_count();
    assert!(n.is_power_of_two() && n <= MAX_SHARDS, "{n}");
    assert_eq!(Shared::new(Mode::Manual).shard_count(), 1);
}

#[test]
fn a_thread_keeps_its_shard_and_threads_get_fresh_indices() {
    let shared = Shared::with_shards(Mode::Running, 4, Instant::now());
    let home = shared.home_shard();
    assert_eq!(home, thread_index() & 3);
    for n in 0..10 {
        let (key, _) = shared.insert(ms(Instant::now(), n), noop());
        assert_eq!(key.queue_id(), home, "every insert of a thread: home shard");
    }
    // Indices are handed out once per thread from a counter: two threads
    // never share one (they may share a shard only modulo the shard count).
    let other = std::thread::spawn(thread_index).join().unwrap();
    let third = std::thread::spawn(thread_index).join().unwrap();
    assert_ne!(other, thread_index());
    assert_ne!(other, third);
}

#[test]
fn keys_name_their_shard_and_never_match_another() {
    let t0 = Instant::now();
    let shared = Shared::with_shards(Mode::Manual, 4, t0);
    // The first insert of each shard: same slot index and seq, other shard.
    let keys: Vec<Key> = (0..4)
        .map(|s| shared.insert_on(s, ms(t0, 10), noop()).0)
        .collect();
    for (s, key) in keys.iter().enumerate() {
        assert_eq!(key.queue_id(), s);
    }
    assert!(shared.cancel(keys[1]).is_some());
    assert!(shared.cancel(keys[1]).is_none(), "stale");
    assert!(!shared.contains(keys[1]));
    for s in [0, 2, 3] {
        assert!(shared.contains(keys[s]), "other shards untouched");
    }
    // Shard 1 reuses the slot: the old key still matches nothing.
    let (fresh, _) = shared.insert_on(1, ms(t0, 10), noop());
    assert!(!shared.contains(keys[1]) && shared.contains(fresh));
    assert!(shared.cancel(keys[1]).is_none());
    // A key handed to another shard's queue (same index and seq) is stale
    // there too.
    let mut st = shared.shard(0);
    assert!(st.queue.get_mut(keys[2]).is_none());
    assert!(st.queue.remove(keys[3]).is_none());
    assert_eq!(st.queue.len(), 1);
    drop(st);
    assert_eq!(shared.stats().armed, 4);
    assert_eq!(shared.stats().canceled, 1);
}

#[test]
fn fire_due_merges_shards_in_deadline_order() {
    let t0 = Instant::now();
    let shared = Shared::with_shards(Mode::Manual, 4, t0);
    let log = Arc::new(StdMutex::new(Vec::new()));
    // Deadline n on shard n % 4, scheduled in a scrambled order.
    for n in [7, 3, 11, 0, 9, 4, 1, 10, 6, 2, 8, 5] {
        shared.insert_on(n as usize % 4, ms(t0, n), record(&log, n));
    }
    assert_eq!(shared.next_deadline(), Some(t0));
    assert_eq!(shared.fire_due(ms(t0, 5)), 6);
    assert_eq!(shared.next_deadline(), Some(ms(t0, 6)));
    assert_eq!(shared.fire_due(ms(t0, 100)), 6);
    assert_eq!(*log.lock().unwrap(), (0..12).collect::<Vec<_>>());
    // Equal deadlines: FIFO within a shard, lower shard first across them.
    log.lock().unwrap().clear();
    for n in 0..8 {
        shared.insert_on(3 - n as usize % 4, ms(t0, 200), record(&log, n));
    }
    assert_eq!(shared.fire_due(ms(t0, 200)), 8);
    assert_eq!(*log.lock().unwrap(), vec![3, 7, 2, 6, 1, 5, 0, 4]);
}

#[test]
fn bursts_larger_than_a_batch_stay_in_order_across_shards() {
    let t0 = Instant::now();
    let shared = Shared::with_shards(Mode::Manual, 2, t0);
    let log = Arc::new(StdMutex::new(Vec::new()));
    // Shard 0 holds the even deadlines, shard 1 the odd ones: every pop
    // alternates, and each shard alone holds more than a batch.
    let total = 3 * BATCH as u64;
    for n in 0..total {
        shared.insert_on(n as usize % 2, ms(t0, n), record(&log, n));
    }
    assert_eq!(shared.fire_due(ms(t0, total)), total as usize);
    assert_eq!(*log.lock().unwrap(), (0..total).collect::<Vec<_>>());
    // One shard far ahead of the other: batches of one shard, in order.
    log.lock().unwrap().clear();
    for n in 0..total {
        let shard = usize::from(n >= BATCH as u64 / 2);
        shared.insert_on(shard, ms(t0, 1000 + n), record(&log, n));
    }
    assert_eq!(shared.fire_due(ms(t0, 1000 + total)), total as usize);
    assert_eq!(*log.lock().unwrap(), (0..total).collect::<Vec<_>>());
    assert_eq!(shared.stats().fired, 2 * total);
}

#[test]
fn fire_due_fires_what_callbacks_schedule_on_other_shards() {
    let t0 = Instant::now();
    let shared = Arc::new(Shared::with_shards(Mode::Manual, 4, t0));
    let hits = Arc::new(AtomicUsize::new(0));
    let inner = {
        let hits = Arc::clone(&hits);
        Callback::Func(Box::new(move || {
            hits.fetch_add(1, SeqCst);
        }))
    };
    let chain = {
        let shared = Arc::clone(&shared);
        Callback::Func(Box::new(move || {
            // Due already, on a shard the pass has scanned.
            shared.insert_on(0, t0, inner);
        }))
    };
    shared.insert_on(3, ms(t0, 1), chain);
    assert_eq!(shared.fire_due(ms(t0, 1)), 2);
    assert_eq!(hits.load(SeqCst), 1);
}

#[test]
fn stats_armed_is_exact_across_shards() {
    let t0 = Instant::now();
    let shared = Arc::new(Shared::with_shards(Mode::Manual, 4, t0));
    let threads = 4;
    let rounds = 2_000;
    let barrier = Arc::new(Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let shared = Arc::clone(&shared);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let mut kept = Vec::new();
                for i in 0..rounds {
                    let shard = (t + i) % 4;
                    let (key, _) = shared.insert_on(shard, ms(t0, 1 + i as u64), noop());
                    if i % 4 == 0 {
                        kept.push(key);
                    } else {
                        assert!(shared.cancel(key).is_some());
                    }
                }
                kept
            })
        })
        .collect();
    barrier.wait();
    // Snapshots taken while the workers run are consistent.
    for _ in 0..200 {
        let s = shared.stats();
        assert_eq!(s.armed as u64, s.scheduled - s.fired - s.canceled, "{s:?}");
    }
    let kept: Vec<Key> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let stats = shared.stats();
    assert_eq!(stats.armed, kept.len());
    assert_eq!(stats.armed, threads * rounds / 4);
    assert_eq!(stats.scheduled, (threads * rounds) as u64);
    assert_eq!(stats.canceled, (threads * rounds * 3 / 4) as u64);
    // Every shard holds its share.
    for s in 0..4 {
        assert_eq!(shared.shard(s).queue.len(), kept.len() / 4);
    }
    assert_eq!(shared.fire_due(ms(t0, 1 + rounds as u64)), kept.len());
    let stats = shared.stats();
    assert_eq!((stats.armed, stats.fired), (0, kept.len() as u64));
}

#[test]
fn encode_is_monotone_and_avoids_the_sentinels() {
    let base = Instant::now();
    let shared = Shared::with_shards(Mode::Running, 2, base);
    let past = base.checked_sub(Duration::from_secs(1)).unwrap_or(base);
    let far = base + Duration::from_secs(1000 * 365 * 24 * 3600);
    let points = [
        past,
        base,
        ms(base, 1),
        ms(base, 2),
        far,
        far + Duration::from_secs(1),
    ];
    let encoded: Vec<u64> = points.iter().map(|&t| shared.encode(t)).collect();
    assert!(encoded.windows(2).all(|w| w[0] <= w[1]), "{encoded:?}");
    assert!(encoded.iter().all(|&e| e != NOTIFIED && e != UNBOUNDED));
    assert_eq!(encoded[0], ENCODED_MIN, "clamped below");
    assert!(encoded[2] < encoded[3]);
    let ns = base + Duration::from_nanos(1);
    assert_eq!(
        shared.encode(ns),
        shared.encode(base) + 1,
        "nanosecond-exact"
    );
    // Far beyond the range (if `Instant` can represent it): clamped above.
    if let Some(beyond) = base.checked_add(Duration::from_secs(600 * 365 * 24 * 3600)) {
        assert_eq!(shared.encode(beyond), ENCODED_MAX);
    }
}

#[test]
fn must_wake_is_strictly_earlier_except_in_the_clamps() {
    assert!(must_wake(5, 6));
    assert!(!must_wake(6, 6), "equal deadlines fire together");
    assert!(!must_wake(7, 6));
    assert!(
        must_wake(ENCODED_MAX, UNBOUNDED),
        "scanning or idle: always"
    );
    assert!(!must_wake(ENCODED_MIN, NOTIFIED), "pending: never");
    assert!(
        must_wake(ENCODED_MIN, ENCODED_MIN),
        "clamped: maybe earlier"
    );
    assert!(
        must_wake(ENCODED_MAX, ENCODED_MAX),
        "clamped: maybe earlier"
    );
}

/// The insert-side decisions, driven by hand (no thread): wake only for a
/// new shard top due before the published park time, once per turn.
#[test]
fn inserts_wake_the_driver_only_when_needed() {
    let t0 = Instant::now();
    let shared = Shared::with_shards(Mode::Running, 2, t0);
    let dirty = |shared: &Shared| shared.park.lock().dirty;
    let begin = |shared: &Shared| shared.begin_turn(&mut shared.park.lock());
    let park_until = |shared: &Shared, until: Option<Instant>| {
        let mut park = shared.park.lock();
        shared.begin_turn(&mut park);
        shared.publish_park(&park, until);
    };

    // Parked until 100 ms: new shard tops due then or later change nothing.
    park_until(&shared, Some(ms(t0, 100)));
    let (equal, _) = shared.insert_on(0, ms(t0, 100), noop());
    assert!(!dirty(&shared), "fires together with the one waited for");
    assert!(shared.cancel(equal).is_some());
    shared.insert_on(0, ms(t0, 200), noop());
    shared.insert_on(1, ms(t0, 300), noop());
    assert!(!dirty(&shared));
    // An earlier new top (on either shard) marks the turn dirty.
    shared.insert_on(1, ms(t0, 50), noop());
    assert!(dirty(&shared));
    assert_eq!(shared.wake_at.load(Relaxed), NOTIFIED);

    // Parked until 10 ms: an early entry behind its shard's top (50 ms) is
    // covered by that top.
    park_until(&shared, Some(ms(t0, 10)));
    shared.insert_on(1, ms(t0, 60), noop());
    assert!(!dirty(&shared));

    // Scanning: any new shard top marks the turn dirty, however late.
    begin(&shared);
    let (key, _) = shared.insert_on(0, ms(t0, 1_000_000), noop());
    assert!(!dirty(&shared), "not a top: shard 0 has 200 ms");
    assert!(shared.cancel(key).is_some());
    let empty = Shared::with_shards(Mode::Running, 2, t0);
    begin(&empty);
    empty.insert_on(1, ms(t0, 1_000_000), noop());
    assert!(dirty(&empty));

    // Parked with nothing: likewise.
    park_until(&empty, None);
    empty.insert_on(0, ms(t0, 1_000_000), noop());
    assert!(dirty(&empty));
}

#[test]
fn manual_timers_never_touch_the_park_lock() {
    let t0 = Instant::now();
    let shared = Shared::with_shards(Mode::Manual, 2, t0);
    let park = shared.park.lock(); // inserts would deadlock if they locked it
    for n in 0..10 {
        shared.insert_on(n % 2, ms(t0, 10 - n as u64), noop());
    }
    drop(park);
    assert_eq!(shared.stats().armed, 10);
}
