//! The deterministic core: an indexed binary min-heap of deadlines over a slab.
//!
//! Pure data structure: no threads, no locks, no clock. Every operation is
//! driven by the caller's `Instant`s, which is what makes it unit-testable
//! with synthetic time.
//!
//! * The heap (`Vec<Node>`) is ordered by `(deadline, seq)`; `seq` is a
//!   per-queue insertion counter, so equal deadlines fire in FIFO order.
//!   Nodes carry their ordering key inline, so sifting never touches the slab.
//! * The slab (`Vec<Slot<T>>`) owns the values and records each entry's heap
//!   position, which is what makes [`Queue::remove`] a true O(log n) removal.
//!   Vacant slots form a LIFO free list, so memory is reused and bounded by the
//!   peak number of live entries.
//! * A [`Key`] is `(slot index, seq)`. `seq` doubles as the slot's generation:
//!   it is unique for the queue's whole life, so a stale key never matches a
//!   slot that was reused (and the slab can even be dropped and rebuilt when the
//!   queue empties — see [`SHRINK_ABOVE`]).
//! * A queue has an id below [`MAX_IDS`] (the shard it serves, see
//!   `shared.rs`), carried in its keys as `seq % MAX_IDS`: its sequence
//!   numbers are `id, id + MAX_IDS, id + 2 * MAX_IDS, …`. So a key handed to
//!   another queue matches nothing there either, at no cost in the key or in
//!   the lookups (a field and a check measurably slowed insert + cancel).

use std::time::Instant;

#[cfg(test)]
mod tests;

/// When the queue becomes empty and its slab or heap capacity exceeds this many
/// entries, both are shrunk back to [`SHRINK_TO`] so a burst does not pin its
/// peak memory forever.
pub(crate) const SHRINK_ABOVE: usize = 8 * 1024;
/// Capacity kept after shrinking.
pub(crate) const SHRINK_TO: usize = 1024;

/// End-of-list marker of the free list.
const NIL: usize = usize::MAX;

/// Queue ids are below this; it is also the step between a queue's sequence
/// numbers.
pub(crate) const MAX_IDS: usize = 8;

/// Identifies one scheduled entry: slot index plus the entry's unique sequence
/// number (its generation), which also names the queue (`seq % MAX_IDS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    index: usize,
    seq: u64,
}

impl Key {
    /// The id of the queue that issued this key.
    pub(crate) fn queue_id(self) -> usize {
        (self.seq % MAX_IDS as u64) as usize
    }
}

/// A heap node: the ordering key inline, plus the slot holding the value.
#[derive(Debug, Clone, Copy)]
struct Node {
    deadline: Instant,
    seq: u64,
    slot: usize,
}

impl Node {
    /// Strict heap order: earlier deadline first, then lower `seq` (FIFO).
    fn before(&self, other: &Node) -> bool {
        (self.deadline, self.seq) < (other.deadline, other.seq)
    }
}

#[derive(Debug)]
enum Slot<T> {
    Occupied { seq: u64, pos: usize, value: T },
    Vacant { next_free: usize },
}

/// Indexed min-heap of `(deadline, value)` with O(log n) removal by [`Key`].
#[derive(Debug)]
pub(crate) struct Queue<T> {
    heap: Vec<Node>,
    slots: Vec<Slot<T>>,
    free_head: usize,
    /// `≡ id (mod MAX_IDS)`; grows by `MAX_IDS` per insert.
    next_seq: u64,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Queue<T> {
    pub(crate) const fn new() -> Self {
        Self::with_id(0)
    }

    /// An empty queue whose keys carry `id` (`< MAX_IDS`).
    pub(crate) const fn with_id(id: usize) -> Self {
        assert!(id < MAX_IDS);
        Self {
            heap: Vec::new(),
            slots: Vec::new(),
            free_head: NIL,
            next_seq: id as u64,
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

    /// The earliest deadline, if any.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.heap.first().map(|n| n.deadline)
    }

    /// Inserts `value` due at `deadline`. Returns its key and whether it became
    /// the new earliest entry (the driver must then be woken).
    pub(crate) fn insert(&mut self, deadline: Instant, value: T) -> (Key, bool) {
        let seq = self.next_seq;
        self.next_seq += MAX_IDS as u64;
        let pos = self.heap.len();
        let slot = Slot::Occupied { seq, pos, value };
        let index = if self.free_head == NIL {
            self.slots.push(slot);
            self.slots.len() - 1
        } else {
            let index = self.free_head;
            match std::mem::replace(&mut self.slots[index], slot) {
                Slot::Vacant { next_free } => self.free_head = next_free,
                Slot::Occupied { .. } => unreachable!("free list points at an occupied slot"),
            }
            index
        };
        self.heap.push(Node {
            deadline,
            seq,
            slot: index,
        });
        let pos = self.sift_up(pos);
        (Key { index, seq }, pos == 0)
    }

    /// `true` if `key` is still scheduled.
    pub(crate) fn contains(&self, key: Key) -> bool {
        self.pos_of(key).is_some()
    }

    /// The value of a live entry, for in-place updates (e.g. a new waker).
    pub(crate) fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        match self.slots.get_mut(key.index) {
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

    /// Pops, in `(deadline, seq)` order, up to `max` entries whose deadline is
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

    /// Pops, in `(deadline, seq)` order, up to `max` entries while `take`
    /// accepts the earliest one's deadline, appending `(deadline, value)` to
    /// `out`. Returns how many. (`take` must be monotone: once it rejects a
    /// deadline it rejects every later one.)
    pub(crate) fn pop_while(
        &mut self,
        out: &mut Vec<(Instant, T)>,
        max: usize,
        take: impl Fn(Instant) -> bool,
    ) -> usize {
        let mut n = 0;
        while n < max {
            match self.heap.first() {
                Some(top) if take(top.deadline) => {
                    out.push(self.remove_at(0));
                    n += 1;
                }
                _ => break,
            }
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
        match self.slots.get(key.index) {
            Some(Slot::Occupied { seq, pos, .. }) if *seq == key.seq => Some(*pos),
            _ => None,
        }
    }

    /// Removes the heap node at `pos` and frees its slot.
    fn remove_at(&mut self, pos: usize) -> (Instant, T) {
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
        let value = match std::mem::replace(&mut self.slots[node.slot], vacant) {
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
        match &mut self.slots[slot] {
            Slot::Occupied { pos: p, .. } => *p = pos,
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
            match &self.slots[node.slot] {
                Slot::Occupied { seq, pos, .. } => {
                    assert_eq!(*pos, i, "slot back-pointer");
                    assert_eq!(*seq, node.seq, "slot seq");
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
            match &self.slots[at] {
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
}
