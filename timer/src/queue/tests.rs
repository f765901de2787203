//! Unit tests of the queue, driven by synthetic instants (no sleeping).

use super::*;
use std::time::Duration;

fn ms(base: Instant, n: u64) -> Instant {
    base + Duration::from_millis(n)
}

/// Pops everything due at `now` and returns the values.
fn pop_all<T>(q: &mut Queue<T>, now: Instant) -> Vec<T> {
    let mut out = Vec::new();
    q.pop_due(now, &mut out, usize::MAX);
    out.into_iter().map(|(_, v)| v).collect()
}

/// xorshift64*: a tiny deterministic PRNG for the randomized tests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn pops_in_deadline_order() {
    let base = Instant::now();
    let mut q = Queue::new(base);
    for n in [5, 1, 9, 3, 7, 2, 8, 0, 6, 4] {
        q.insert(ms(base, n), n);
    }
    q.check_invariants();
    assert_eq!(q.next_deadline(), Some(base));
    assert_eq!(pop_all(&mut q, ms(base, 100)), (0..10).collect::<Vec<_>>());
    assert!(q.is_empty());
    assert_eq!(q.next_deadline(), None);
}

#[test]
fn only_due_entries_pop() {
    let base = Instant::now();
    let mut q = Queue::new(base);
    for n in 0..10 {
        q.insert(ms(base, n * 10), n);
    }
    // Inclusive: the entry due exactly at `now` fires; the next one does not.
    assert_eq!(pop_all(&mut q, ms(base, 30)), vec![0, 1, 2, 3]);
    assert_eq!(q.next_deadline(), Some(ms(base, 40)));
    assert_eq!(pop_all(&mut q, ms(base, 39)), Vec::<u64>::new());
    assert_eq!(q.len(), 6);
    q.check_invariants();
}

#[test]
fn pop_due_respects_max_batch() {
    let base = Instant::now();
    let mut q = Queue::new(base);
    for n in 0..10 {
        q.insert(base, n);
    }
    let mut out = Vec::new();
    assert_eq!(q.pop_due(base, &mut out, 4), 4);
    assert_eq!(q.pop_due(base, &mut out, 4), 4);
    assert_eq!(q.pop_due(base, &mut out, 4), 2);
    assert_eq!(q.pop_due(base, &mut out, 4), 0);
    let values: Vec<_> = out.iter().map(|(_, v)| *v).collect();
    assert_eq!(values, (0..10).collect::<Vec<_>>());
    assert!(out.iter().all(|(d, _)| *d == base));
}

#[test]
fn equal_deadlines_are_fifo() {
    let base = Instant::now();
    let mut q = Queue::new(base);
    // Interleave two deadlines; within each, insertion order must hold even
    // after unrelated removals reshuffle the heap.
    let mut keys = Vec::new();
    for n in 0..50 {
        let at = if n % 2 == 0 { ms(base, 1) } else { ms(base, 2) };
        keys.push(q.insert(at, n).0);
    }
    for n in (0..50).step_by(7) {
        assert_eq!(q.remove(keys[n]), Some(n));
    }
    q.check_invariants();
    let got = pop_all(&mut q, ms(base, 2));
    let mut want: Vec<usize> = (0..50).filter(|n| n % 2 == 0 && n % 7 != 0).collect();
    want.extend((0..50).filter(|n| n % 2 == 1 && n % 7 != 0));
    assert_eq!(got, want);
}

#[test]
fn insert_reports_new_top() {
    let base = Instant::now();
    let mut q = Queue::new(base);
    assert!(q.insert(ms(base, 10), ()).1, "first entry is the top");
    assert!(!q.insert(ms(base, 20), ()).1, "later entry is not");
    assert!(
        !q.insert(ms(base, 10), ()).1,
        "equal deadline queues behind"
    );
    assert!(q.insert(ms(base, 5), ()).1, "earlier entry is the new top");
}

#[test]
fn remove_top_middle_bottom_keeps_heap_valid() {
    let base = Instant::now();
    let mut q = Queue::new(base);
    let keys: Vec<Key> = (0..31).map(|n| q.insert(ms(base, n), n).0).collect();
    // Top.
    assert_eq!(q.remove(keys[0]), Some(0));
    q.check_invariants();
    assert_eq!(q.next_deadline(), Some(ms(base, 1)));
    // Middle.
    assert_eq!(q.remove(keys[15]), Some(15));
    q.check_invariants();
    // Bottom (the last leaf, and the maximum).
    assert_eq!(q.remove(keys[30]), Some(30));
    q.check_invariants();
    let want: Vec<u64> = (1..30).filter(|&n| n != 15).collect();
    assert_eq!(pop_all(&mut q, ms(base, 100)), want);
}

#[test]
fn remove_needs_sift_up() {
    // Removing a node from one subtree moves the last leaf (from the other
    // subtree) into its place; if that leaf is smaller than the new parent it
    // must move up.
    let base = Instant::now();
    let mut q = Queue::new(base);
    let mut keys = Vec::new();
    for n in [0, 100, 1, 101, 102, 2, 3] {
        keys.push(q.insert(ms(base, n), n).0);
    }
    q.check_invariants();
    assert_eq!(q.remove(keys[3]), Some(101));
    q.check_invariants();
    assert_eq!(pop_all(&mut q, ms(base, 1000)), vec![0, 1, 2, 3, 100, 102]);
}

#[test]
fn remove_twice_and_after_pop_returns_none() {
    let base = Instant::now();
    let mut q = Queue::new(base);
    let (a, _) = q.insert(ms(base, 1), 'a');
    let (b, _) = q.insert(ms(base, 2), 'b');
    assert!(q.contains(a));
    assert_eq!(q.remove(a), Some('a'));
    assert_eq!(q.remove(a), None);
    assert!(!q.contains(a));
    assert_eq!(pop_all(&mut q, ms(base, 2)), vec!['b']);
    assert_eq!(q.remove(b), None);
    assert!(q.get_mut(b).is_none());
}

#[test]
fn stale_key_does_not_match_reused_slot() {
    let base = Instant::now();
    let mut q = Queue::new(base);
    let (old, _) = q.insert(ms(base, 1), "old");
    assert_eq!(q.remove(old), Some("old"));
    // The free list hands the same slot to the next entry.
    let (new, _) = q.insert(ms(base, 2), "new");
    assert_eq!(new.index, old.index, "slot reused");
    assert_ne!(new.seq, old.seq, "with a new generation");
    assert_eq!(
        q.remove(old),
        None,
        "stale key must not remove the new entry"
    );
    assert!(q.get_mut(old).is_none());
    assert_eq!(q.len(), 1);
    assert_eq!(q.remove(new), Some("new"));
}

#[test]
fn slab_memory_is_reused() {
    let base = Instant::now();
    let mut q = Queue::new(base);
    for round in 0..100 {
        let keys: Vec<Key> = (0..50).map(|n| q.insert(ms(base, n), round).0).collect();
        for k in keys {
            q.remove(k);
        }
    }
    assert!(q.slab_len() <= 50, "slab grew to {}", q.slab_len());
}

#[test]
fn get_mut_updates_in_place() {
    let base = Instant::now();
    let mut q = Queue::new(base);
    let (k, _) = q.insert(ms(base, 1), 1);
    *q.get_mut(k).unwrap() = 2;
    assert_eq!(pop_all(&mut q, ms(base, 1)), vec![2]);
}

#[test]
fn far_future_deadlines_are_fine() {
    let base = Instant::now();
    // Within the range (584 years from `base`): exact.
    let far = base + Duration::from_secs(500 * 365 * 24 * 3600);
    let mut q = Queue::new(base);
    q.insert(far, "far");
    q.insert(base, "now");
    assert_eq!(pop_all(&mut q, base), vec!["now"]);
    assert_eq!(q.next_deadline(), Some(far));
    q.check_invariants();
}

#[test]
fn deadlines_are_nanosecond_exact_in_range() {
    let base = Instant::now();
    let mut q = Queue::new(base);
    let ns = |n: u64| base + Duration::from_nanos(n);
    let mut points = vec![ns(0), ns(1), ns(999_999_999), ns(1_000_000_001)];
    // The very end of the range, if `Instant` goes that far.
    points.extend(base.checked_add(Duration::from_nanos(u64::MAX)));
    for (i, &at) in points.iter().enumerate().rev() {
        q.insert(at, i);
    }
    for (i, &at) in points.iter().enumerate() {
        assert_eq!(q.next_deadline(), Some(at));
        let mut out = Vec::new();
        assert_eq!(q.pop_due(at, &mut out, usize::MAX), 1);
        assert_eq!(out, vec![(at, i)]);
    }
}

/// A deadline before `base` is due at `base`: never early for a `now` at or
/// after `base` (where a real clock always is), late for one before it.
#[test]
fn deadlines_before_base_saturate_to_base() {
    let t0 = Instant::now();
    let base = t0 + Duration::from_millis(10);
    let mut q = Queue::new(base);
    let before = [t0, t0 + Duration::from_millis(9)];
    q.insert(base + Duration::from_nanos(1), "after");
    q.insert(before[1], "before 1");
    q.insert(before[0], "before 0");
    q.insert(base, "at base");
    q.check_invariants();
    // Reported as `base`: not later than any of them.
    assert_eq!(q.next_deadline(), Some(base));
    assert!(before.iter().all(|&b| b < base));
    // Due at `base`, not at their own (earlier) deadlines.
    let just_before = base - Duration::from_nanos(1);
    assert_eq!(pop_all(&mut q, just_before), Vec::<&str>::new());
    // At `base`: all three, FIFO among them (they are equal now), and never
    // early: `now >= base > their deadline`.
    let mut out = Vec::new();
    assert_eq!(q.pop_due(base, &mut out, usize::MAX), 3);
    assert_eq!(
        out,
        vec![(base, "before 1"), (base, "before 0"), (base, "at base")]
    );
    assert_eq!(
        pop_all(&mut q, base + Duration::from_nanos(1)),
        vec!["after"]
    );
}

/// Beyond `base + (2^64 - 1) ns` a deadline is stored as that end: reported
/// as the end (never later than the truth), equal to the others there (FIFO).
#[test]
fn deadlines_beyond_the_range_saturate_to_its_end() {
    let base = Instant::now();
    let (Some(end), Some(beyond)) = (
        base.checked_add(Duration::from_nanos(u64::MAX)),
        base.checked_add(Duration::from_secs(10_000 * 365 * 24 * 3600)),
    ) else {
        return; // `Instant` cannot go that far: nothing saturates
    };
    let mut q = Queue::new(base);
    q.insert(beyond + Duration::from_secs(1), "later");
    q.insert(beyond, "beyond");
    q.insert(end, "end");
    let near = base + Duration::from_secs(1);
    q.insert(near, "near");
    q.check_invariants();
    assert_eq!(pop_all(&mut q, near), vec!["near"]);
    assert_eq!(q.next_deadline(), Some(end));
    assert!(end < beyond);
    let mut out = Vec::new();
    assert_eq!(q.pop_due(end, &mut out, usize::MAX), 3);
    assert_eq!(out, vec![(end, "later"), (end, "beyond"), (end, "end")]);
}

#[test]
fn earliest_base_goes_back_as_far_as_it_can() {
    let now = Instant::now();
    let base = earliest_base(now);
    assert!(base <= now);
    let back = now - base;
    assert!(back < Duration::from_nanos(1 << 63));
    if back < Duration::from_nanos((1 << 63) - 1) {
        // Stopped early: only because `Instant` ends there.
        assert!(base.checked_sub(Duration::from_nanos(1)).is_none());
    }
    // Every in-range deadline converts back, up to the range's end.
    assert!(base.checked_add(Duration::from_nanos(u64::MAX)).is_some());
    assert_eq!(nanos_since(base, now), back.as_nanos() as u64);
    assert_eq!(nanos_since(base, base), 0);
    assert_eq!(nanos_since(now, base), 0, "saturates below");
}

/// `order` keeps counting modulo 2^32: ordering stays valid across the wrap;
/// only two entries due at the same nanosecond on either side of it swap
/// (module docs). Keys keep the full sequence number.
#[test]
fn order_wraps_without_breaking_the_heap() {
    let base = Instant::now();
    let mut q = Queue::new(base);
    let (first, _) = q.insert(ms(base, 5), "first");
    // The next insert is number 2^32 - 1: its `order` is `u32::MAX`.
    q.skip_inserts((1 << 32) - 3);
    let (last, _) = q.insert(ms(base, 5), "order max");
    assert_eq!(last.seq.get(), (u64::from(u32::MAX)) * MAX_IDS as u64);
    let (wrapped, _) = q.insert(ms(base, 5), "order 0");
    assert_eq!(wrapped.seq.get(), (1 << 32) * MAX_IDS as u64);
    q.insert(ms(base, 4), "earlier");
    q.insert(ms(base, 6), "later");
    q.check_invariants();
    // Keys still name their own entries only.
    assert_eq!(q.get_mut(first).copied(), Some("first"));
    assert_ne!(first, wrapped);
    assert_eq!(
        pop_all(&mut q, ms(base, 6)),
        // The documented anomaly: "order 0" sorts before "order max", and
        // before "first" (order 1).
        vec!["earlier", "order 0", "first", "order max", "later"]
    );
}

#[test]
fn a_full_queue_refuses_inserts_and_stays_intact() {
    let base = Instant::now();
    let mut q = Queue::new(base).with_max_slots(3);
    let keys: Vec<Key> = (0..3).map(|n| q.insert(ms(base, n), n).0).collect();
    assert_eq!(
        q.try_insert(ms(base, 9), 9).err(),
        Some(9),
        "value handed back"
    );
    q.check_invariants();
    assert_eq!(q.len(), 3);
    // A freed slot is reused.
    assert_eq!(q.remove(keys[1]), Some(1));
    let (reused, _) = q.insert(ms(base, 1), 10);
    assert!(q.try_insert(ms(base, 9), 11).is_err());
    q.check_invariants();
    assert_eq!(q.remove(keys[1]), None, "stale key stays dead");
    assert_eq!(pop_all(&mut q, ms(base, 9)), vec![0, 10, 2]);
    assert!(!q.contains(reused));
}

#[cfg(target_pointer_width = "64")]
#[test]
fn layout_sizes() {
    use crate::callback::Callback;
    assert_eq!(size_of::<Node>(), 16);
    assert_eq!(size_of::<Key>(), 16);
    assert_eq!(size_of::<Option<Key>>(), 16);
    assert_eq!(size_of::<Slot<Callback>>(), 40);
}

#[test]
fn drain_into_takes_everything() {
    let base = Instant::now();
    let mut q = Queue::new(base);
    let (k, _) = q.insert(ms(base, 1), 1);
    q.insert(ms(base, 2), 2);
    q.insert(ms(base, 3), 3);
    q.remove(k);
    let mut out = Vec::new();
    q.drain_into(&mut out);
    out.sort_unstable();
    assert_eq!(out, vec![2, 3]);
    assert_eq!(q.len(), 0);
    q.check_invariants();
    // Still usable afterwards, and old keys stay dead.
    assert_eq!(q.remove(k), None);
    q.insert(ms(base, 4), 4);
    q.check_invariants();
}

/// Random insert / remove / pop sequences against a simple model, checking
/// the invariants after every operation.
#[test]
fn random_ops_match_model() {
    let base = Instant::now();
    for seed in 1..=20u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut q = Queue::new(base);
        // Model: live (deadline_ms, seq, key) triples.
        let mut live: Vec<(u64, u64, Key)> = Vec::new();
        let mut dead: Vec<Key> = Vec::new();
        let mut seq = 0u64;
        let mut now_ms = 0u64;
        for _ in 0..2_000 {
            match rng.below(10) {
                0..=4 => {
                    // Small range => many equal deadlines.
                    let d = now_ms + rng.below(40);
                    let (k, top) = q.insert(ms(base, d), seq);
                    let was_top = live.iter().all(|&(ld, _, _)| d < ld);
                    assert_eq!(top, was_top, "new-top flag");
                    live.push((d, seq, k));
                    seq += 1;
                }
                5..=7 if !live.is_empty() => {
                    let i = rng.below(live.len() as u64) as usize;
                    let (_, s, k) = live.swap_remove(i);
                    assert_eq!(q.remove(k), Some(s));
                    dead.push(k);
                }
                8 if !dead.is_empty() => {
                    let k = dead[rng.below(dead.len() as u64) as usize];
                    assert_eq!(q.remove(k), None, "dead key removed something");
                }
                _ => {
                    now_ms += rng.below(10);
                    let max = 1 + rng.below(8) as usize;
                    let mut out = Vec::new();
                    let n = q.pop_due(ms(base, now_ms), &mut out, max);
                    live.sort_by_key(|&(d, s, _)| (d, s));
                    let due = live.iter().take_while(|&&(d, _, _)| d <= now_ms).count();
                    assert_eq!(n, due.min(max));
                    for (i, (at, v)) in out.into_iter().enumerate() {
                        assert_eq!(v, live[i].1, "pop order");
                        assert_eq!(at, ms(base, live[i].0));
                    }
                    dead.extend(live.drain(..n).map(|(_, _, k)| k));
                }
            }
            q.check_invariants();
            assert_eq!(q.len(), live.len());
            let min = live.iter().map(|&(d, _, _)| d).min();
            assert_eq!(q.next_deadline(), min.map(|d| ms(base, d)));
        }
    }
}

#[test]
fn million_insert_then_cancel_leaves_it_empty() {
    let base = Instant::now();
    let mut q = Queue::new(base);
    let mut rng = Rng(0xDEAD_BEEF);
    let keys: Vec<Key> = (0..1_000_000u64)
        .map(|n| q.insert(ms(base, rng.below(10_000)), n).0)
        .collect();
    assert_eq!(q.len(), 1_000_000);
    // Cancel in a scrambled order so removals hit every part of the heap.
    let mut order: Vec<usize> = (0..keys.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for i in order {
        assert!(q.remove(keys[i]).is_some());
    }
    assert_eq!(q.len(), 0);
    assert_eq!(q.next_deadline(), None);
    q.check_invariants();
    // Emptying an oversized queue gives the memory back.
    assert!(q.slab_capacity() <= SHRINK_ABOVE, "{}", q.slab_capacity());
    assert!(keys.iter().all(|&k| !q.contains(k)));
}
