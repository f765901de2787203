//! The deterministic core: an indexed binary min-heap of deadlines over a slab.
//!
//! Pure data structure: no threads, no locks, no clock. Every operation is
//! driven by the caller's `Instant`s, which is what makes it unit-testable
//! with synthetic time.
//!
//! * The heap (`Vec<Node>`, 16 bytes a node) is ordered by `(deadline,
//!   order)`. A node holds its deadline as `u64` nanoseconds since the
//!   queue's `base` (an `Instant` the caller picks once, see
//!   [`earliest_base`]), its slot index as `u32`, and `order`, the low 32 bits
//!   of the queue's insertion count, so equal deadlines fire in FIFO order.
//!   Nodes carry their ordering key inline, so sifting never touches the slab.
//! * Deadlines are exact to the nanosecond from `base` to
//!   `base + (2^64 - 1) ns` (over 584 years). Outside that range they
//!   saturate. A deadline before `base` is stored as `base`: it becomes due
//!   at `base` rather than at its own time, which is not early for any `now`
//!   at or after `base` (always the case with a real clock, `base` being in
//!   the past at insert time), only late for a synthetic `now` before `base`.
//!   A deadline beyond the range is stored as its end: effectively never (a
//!   real clock does not get there; a synthetic `now` past the end finds it
//!   due). Converting back ([`Queue::next_deadline`], popped deadlines) is
//!   exact in range and gives the clamp otherwise, so it is never later than
//!   the true deadline, except for a deadline before `base` (reported as
//!   `base`, which is in the past).
//! * FIFO among equal deadlines rests on `order`, compared as a plain `u32`,
//!   which keeps the heap order a valid total preorder (lexicographic on
//!   `(u64, u32)`). It can only be wrong for two entries due at the very same
//!   nanosecond whose inserts straddle a multiple of 2^32 (the counter's low
//!   bits wrap between them, so the later one sorts first) or lie a multiple
//!   of 2^32 inserts apart (a tie: either may fire first). The full 64-bit
//!   `seq` is kept in the slab, so this never affects which entry a key names.
//! * The slab (`Vec<Slot<T>>`) owns the values and records each entry's heap
//!   position, which is what makes [`Queue::remove`] a true O(log n) removal.
//!   Vacant slots form a LIFO free list, so memory is reused and bounded by the
//!   peak number of live entries. Slot indices and heap positions are `u32`,
//!   so a queue holds at most [`MAX_SLOTS`] (2^32 - 1) live entries: an insert
//!   beyond that is refused and hands its value back ([`Queue::try_insert`]).
//! * A [`Key`] is `(slot index, seq)`. `seq` (a full `u64`, never 0, so
//!   `Option<Key>` costs nothing extra) doubles as the slot's generation: it
//!   is unique for the queue's whole life, so a stale key never matches a slot
//!   that was reused (and the slab can even be dropped and rebuilt when the
//!   queue empties — see [`SHRINK_ABOVE`]).
//! * A queue has an id below [`MAX_IDS`] (the shard it serves, see
//!   `shared.rs`), carried in its keys as `seq % MAX_IDS`: its `n`-th insert
//!   (`n >= 1`) gets `seq = id + n * MAX_IDS` (and `order = n mod 2^32`). So a
//!   key handed to another queue matches nothing there either, at no cost in
//!   the key or in the lookups (a field and a check measurably slowed insert +
//!   cancel).

use std::num::NonZeroU64;
use std::time::{Duration, Instant};

#[cfg(test)]
mod tests;

/// When the queue becomes empty and its slab or heap capacity exceeds this many
/// entries, both are shrunk back to [`SHRINK_TO`] so a burst does not pin its
/// peak memory forever.
pub(crate) const SHRINK_ABOVE: usize = 8 * 1024;
/// Capacity kept after shrinking.
pub(crate) const SHRINK_TO: usize = 1024;

/// End-of-list marker of the free list (never a slot index).
const NIL: u32 = u32::MAX;

/// Most slots, hence live entries, per queue: indices are `u32`s below [`NIL`].
pub(crate) const MAX_SLOTS: usize = NIL as usize;

/// Queue ids are below this; it is also the step between a queue's sequence
/// numbers.
pub(crate) const MAX_IDS: usize = 8;

/// Identifies one scheduled entry: slot index plus the entry's unique sequence
/// number (its generation), which also names the queue (`seq % MAX_IDS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    index: u32,
    seq: NonZeroU64,
}

impl Key {
    /// The id of the queue that issued this key.
    pub(crate) fn queue_id(self) -> usize {
        (self.seq.get() % MAX_IDS as u64) as usize
    }
}

/// Nanoseconds from `base` to `at`: 0 if `at <= base`, `u64::MAX` if `at` is
/// `u64::MAX` ns or more after it; exact in between.
pub(crate) fn nanos_since(base: Instant, at: Instant) -> u64 {
    let since = at.saturating_duration_since(base);
    u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
}

/// A base for queues created at `now`: the earliest `Instant` at most
/// `2^63 - 1` ns (about 292 years) before it, or the platform's earliest
/// `Instant` if it cannot go back that far.
///
/// So no deadline or `now` a program can produce (short of synthetic ones
/// centuries back) precedes it, and deadlines stay exact until at least
/// 2^63 ns (about 292 years) after `now`.
pub(crate) fn earliest_base(now: Instant) -> Instant {
    // Greedy from the top bit: `checked_sub` succeeds for every step back up
    // to the earliest representable `Instant`, and fails beyond it.
    let mut back = 0u64;
    for bit in (0..63).rev() {
        let further = back | 1 << bit;
        if now.checked_sub(Duration::from_nanos(further)).is_some() {
            back = further;
        }
    }
    now - Duration::from_nanos(back)
}

/// A heap node: the ordering key inline, plus the slot holding the value.
#[derive(Debug, Clone, Copy)]
struct Node {
    /// Nanoseconds since the queue's `base`, saturated (module docs).
    deadline: u64,
    /// The insertion count's low 32 bits: FIFO among equal deadlines.
    order: u32,
    slot: u32,
}

impl Node {
    /// Strict heap order: earlier deadline first, then lower `order` (FIFO).
    fn before(&self, other: &Node) -> bool {
        (self.deadline, self.order) < (other.deadline, other.order)
    }
}

#[derive(Debug)]
enum Slot<T> {
    Occupied { seq: NonZeroU64, pos: u32, value: T },
    Vacant { next_free: u32 },
}

/// Indexed min-heap of `(deadline, value)` with O(log n) removal by [`Key`].
#[derive(Debug)]
pub(crate) struct Queue<T> {
    heap: Vec<Node>,
    slots: Vec<Slot<T>>,
    free_head: u32,
    /// `≡ id (mod MAX_IDS)`; grows by `MAX_IDS` per insert.
    next_seq: NonZeroU64,
    /// Origin of the nodes' deadlines.
    base: Instant,
    /// [`MAX_SLOTS`], lowered by tests of the limit.
    max_slots: usize,
}

impl<T> Queue<T> {
    #[cfg(test)]
    pub(crate) fn new(base: Instant) -> Self {
        Self::with_id(0, base)
    }

    /// An empty queue whose keys carry `id` (`< MAX_IDS`) and whose deadlines
    /// count from `base` (see the module docs: pick one at or before every
    /// deadline and every `now` to come, e.g. [`earliest_base`]).
    pub(crate) fn with_id(id: usize, base: Instant) -> Self {
        assert!(id < MAX_IDS);
        Self {
            heap: Vec::new(),
            slots: Vec::new(),
            free_head: NIL,
            next_seq: NonZeroU64::new((id + MAX_IDS) as u64).expect("id + MAX_IDS > 0"),
            base,
            max_slots: MAX_SLOTS,
        }
    }

    /// Number of live entries (all of them are in the heap).
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The earliest deadline, if any (saturated as the module docs say).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.heap.first().map(|n| self.instant(n.deadline))
    }

    /// `base + nanos`. Never overflows for a stored deadline: below
    /// `u64::MAX` it is exactly an `Instant` that was inserted, and
    /// `u64::MAX` is stored only for an `Instant` at least that far after
    /// `base`, so every `Instant` in between exists too.
    fn instant(&self, nanos: u64) -> Instant {
        self.base + Duration::from_nanos(nanos)
    }

    /// Inserts `value` due at `deadline`. Returns its key and whether it became
    /// the new earliest entry (the driver must then be woken).
    ///
    /// `deadline` saturates into the queue's range (module docs): one before
    /// `base` becomes due at `base`, which never fires it early as long as
    /// `base` is not after the `now`s it is popped with.
    ///
    /// # Errors
    ///
    /// Hands `value` back, changing nothing, if the queue already holds
    /// [`MAX_SLOTS`] entries.
    ///
    /// # Panics
    ///
    /// After about 2^61 inserts, when the sequence numbers run out (at a
    /// billion inserts a second, 73 years).
    pub(crate) fn try_insert(&mut self, deadline: Instant, value: T) -> Result<(Key, bool), T> {
        let seq = self.next_seq;
        let next_seq = seq
            .checked_add(MAX_IDS as u64)
            .expect("cancelctx-timer: sequence numbers exhausted");
        // `heap.len() <= live entries < max_slots <= u32::MAX` once the slot
        // below is found, so the position fits.
        let pos = self.heap.len() as u32;
        let index = if self.free_head == NIL {
            let index = self.slots.len();
            if index >= self.max_slots {
                return Err(value);
            }
            self.slots.push(Slot::Occupied { seq, pos, value });
            index as u32
        } else {
            let index = self.free_head;
            // Read just the link, then overwrite: a whole-slot `mem::replace`
            // reloads all 40 bytes right after `remove_at` stored them in
            // pieces (schedule + cancel alone: ~5 ns less in 4 of 5 paired
            // runs).
            let slot = &mut self.slots[index as usize];
            match *slot {
                Slot::Vacant { next_free } => self.free_head = next_free,
                Slot::Occupied { .. } => unreachable!("free list points at an occupied slot"),
            }
            *slot = Slot::Occupied { seq, pos, value };
            index
        };
        self.next_seq = next_seq;
        self.heap.push(Node {
            deadline: nanos_since(self.base, deadline),
            order: (seq.get() / MAX_IDS as u64) as u32,
            slot: index,
        });
        let pos = self.sift_up(pos as usize);
        Ok((Key { index, seq }, pos == 0))
    }

    /// [`Queue::try_insert`], panicking if the queue is full.
    #[cfg(test)]
    pub(crate) fn insert(&mut self, deadline: Instant, value: T) -> (Key, bool) {
        match self.try_insert(deadline, value) {
            Ok(inserted) => inserted,
            Err(_) => panic!("queue full"),
        }
    }

    /// `true` if `key` is still scheduled.
    pub(crate) fn contains(&self, key: Key) -> bool {
        self.pos_of(key).is_some()
    }

    /// The value of a live entry, for in-place updates (e.g. a new waker).
    pub(crate) fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        match self.slots.get_mut(key.index as usize) {
            Some(Slot::Occupied { seq, value, .. }) if *seq == key.seq => Some(value),
            _ => None,
        }
    }

    /// Removes the entry named by `key` in O(log n) and returns its value, or
    /// `None` if it is no longer scheduled (already popped or removed, or the
    /// key is stale).
    pub(crate) fn remove(&mut self, key: Key) -> Option<T> {
        let pos = self.pos_of(key)?;
        Some(self.remove_at(pos).1)
    }

    /// Pops, in `(deadline, order)` order, up to `max` entries whose deadline is
    /// `<= now`, appending `(deadline, value)` to `out`. Returns how many.
    #[cfg(test)]
    pub(crate) fn pop_due(
        &mut self,
        now: Instant,
        out: &mut Vec<(Instant, T)>,
        max: usize,
    ) -> usize {
        self.pop_while(out, max, |deadline| deadline <= now)
    }

    /// Pops, in `(deadline, order)` order, up to `max` entries while `take`
    /// accepts the earliest one's deadline (as [`Queue::next_deadline`]
    /// reports it), appending `(deadline, value)` to `out`. Returns how many.
    /// (`take` must be monotone: once it rejects a deadline it rejects every
    /// later one.)
    pub(crate) fn pop_while(
        &mut self,
        out: &mut Vec<(Instant, T)>,
        max: usize,
        take: impl Fn(Instant) -> bool,
    ) -> usize {
        let mut n = 0;
        while n < max {
            let Some(deadline) = self.next_deadline() else {
                break;
            };
            if !take(deadline) {
                break;
            }
            out.push((deadline, self.remove_at(0).1));
            n += 1;
        }
        n
    }

    /// Removes every entry, appending the values to `out` (used at shutdown so
    /// the values are dropped outside the lock).
    pub(crate) fn drain_into(&mut self, out: &mut Vec<T>) {
        for slot in self.slots.drain(..) {
            if let Slot::Occupied { value, .. } = slot {
                out.push(value);
            }
        }
        self.heap.clear();
        self.free_head = NIL;
    }

    fn pos_of(&self, key: Key) -> Option<usize> {
        match self.slots.get(key.index as usize) {
            Some(Slot::Occupied { seq, pos, .. }) if *seq == key.seq => Some(*pos as usize),
            _ => None,
        }
    }

    /// Removes the heap node at `pos` and frees its slot. Returns the node's
    /// stored deadline (nanoseconds since `base`) and the value.
    fn remove_at(&mut self, pos: usize) -> (u64, T) {
        let node = self.heap.swap_remove(pos);
        if pos < self.heap.len() {
            // The former last node now sits at `pos`: restore the order in
            // whichever direction it is violated.
            self.set_pos(pos);
            let moved = self.sift_up(pos);
            if moved == pos {
                self.sift_down(pos);
            }
        }
        let vacant = Slot::Vacant {
            next_free: self.free_head,
        };
        let value = match std::mem::replace(&mut self.slots[node.slot as usize], vacant) {
            Slot::Occupied { value, .. } => value,
            Slot::Vacant { .. } => unreachable!("heap node points at a vacant slot"),
        };
        self.free_head = node.slot;
        if self.heap.is_empty() {
            self.reset_if_oversized();
        }
        (node.deadline, value)
    }

    /// With no live entries, every slot is vacant: the slab can be dropped
    /// (keys stay unique because `seq` keeps counting).
    fn reset_if_oversized(&mut self) {
        if self.slots.capacity() > SHRINK_ABOVE || self.heap.capacity() > SHRINK_ABOVE {
            self.slots.clear();
            self.slots.shrink_to(SHRINK_TO);
            self.heap.shrink_to(SHRINK_TO);
            self.free_head = NIL;
        }
    }

    /// Records in the slab that the node at `pos` lives at `pos`.
    fn set_pos(&mut self, pos: usize) {
        let slot = self.heap[pos].slot;
        match &mut self.slots[slot as usize] {
            // `pos < heap.len() <= u32::MAX` (see `insert`).
            Slot::Occupied { pos: p, .. } => *p = pos as u32,
            Slot::Vacant { .. } => unreachable!("heap node points at a vacant slot"),
        }
    }

    /// Moves the node at `pos` up while it orders before its parent; returns
    /// its final position.
    fn sift_up(&mut self, mut pos: usize) -> usize {
        let node = self.heap[pos];
        while pos > 0 {
            let parent = (pos - 1) / 2;
            if !node.before(&self.heap[parent]) {
                break;
            }
            self.heap[pos] = self.heap[parent];
            self.set_pos(pos);
            pos = parent;
        }
        self.heap[pos] = node;
        self.set_pos(pos);
        pos
    }

    /// Moves the node at `pos` down while a child orders before it.
    fn sift_down(&mut self, mut pos: usize) {
        let node = self.heap[pos];
        let len = self.heap.len();
        loop {
            let left = 2 * pos + 1;
            if left >= len {
                break;
            }
            let right = left + 1;
            let child = if right < len && self.heap[right].before(&self.heap[left]) {
                right
            } else {
                left
            };
            if !self.heap[child].before(&node) {
                break;
            }
            self.heap[pos] = self.heap[child];
            self.set_pos(pos);
            pos = child;
        }
        self.heap[pos] = node;
        self.set_pos(pos);
    }

    /// Panics unless the heap order, the slab's back-pointers and the free
    /// list are all consistent.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        for (i, node) in self.heap.iter().enumerate() {
            if i > 0 {
                let parent = &self.heap[(i - 1) / 2];
                assert!(!node.before(parent), "heap order violated at {i}");
            }
            match &self.slots[node.slot as usize] {
                Slot::Occupied { seq, pos, .. } => {
                    assert_eq!(*pos as usize, i, "slot back-pointer");
                    let order = (seq.get() / MAX_IDS as u64) as u32;
                    assert_eq!(order, node.order, "slot seq");
                }
                Slot::Vacant { .. } => panic!("heap node {i} points at a vacant slot"),
            }
        }
        let occupied = self
            .slots
            .iter()
            .filter(|s| matches!(s, Slot::Occupied { .. }))
            .count();
        assert_eq!(occupied, self.heap.len(), "occupied slots == heap len");
        let mut free = 0;
        let mut at = self.free_head;
        while at != NIL {
            match &self.slots[at as usize] {
                Slot::Vacant { next_free } => at = *next_free,
                Slot::Occupied { .. } => panic!("free list reaches an occupied slot"),
            }
            free += 1;
            assert!(free <= self.slots.len(), "free list cycle");
        }
        assert_eq!(
            free + occupied,
            self.slots.len(),
            "every slot is live or free"
        );
    }

    #[cfg(test)]
    pub(crate) fn slab_len(&self) -> usize {
        self.slots.len()
    }

    #[cfg(test)]
    pub(crate) fn slab_capacity(&self) -> usize {
        self.slots.capacity()
    }

    /// Tests of the slot limit: at most `max` live entries.
    #[cfg(test)]
    pub(crate) fn with_max_slots(mut self, max: usize) -> Self {
        assert!(max <= MAX_SLOTS);
        self.max_slots = max;
        self
    }

    /// Tests of the counter's wrap: as if `inserts` inserts had happened.
    #[cfg(test)]
    pub(crate) fn skip_inserts(&mut self, inserts: u64) {
        let step = inserts.checked_mul(MAX_IDS as u64).expect("skip too far");
        self.next_seq = self.next_seq.checked_add(step).expect("skip too far");
    }
}
