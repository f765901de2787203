//! A small slab: O(1) insert and remove by index, memory bounded by the most
//! entries alive at once. Holds a node's children and its waiters.
//!
//! The first [`INLINE`] slots live inline (a `SmallVec`): a node's slab is
//! itself allocated on first use (see `node.rs`), so a node with a child or
//! two, or one waiter, costs one allocation, as a `Vec` would.

use std::mem;

use smallvec::SmallVec;

/// Slots stored inline.
pub(crate) const INLINE: usize = 2;

/// The slots, as [`Slab::take`] hands them over.
pub(crate) type Slots<T> = SmallVec<[Slot<T>; INLINE]>;

/// An emptied slab keeps its memory up to this many slots, so steady churn
/// allocates nothing; a larger burst is released at once.
const KEEP_SLOTS: usize = 64;

/// End of the free list.
const NONE: u32 = u32::MAX;

pub(crate) enum Slot<T> {
    Occupied(T),
    /// The next vacant slot (a free list threaded through the slab).
    Vacant(u32),
}

/// Indices are `u32` (a node with four billion children is not a use case;
/// `insert` panics past that): the slab lives in every context node, so its
/// size matters.
pub(crate) struct Slab<T> {
    slots: Slots<T>,
    next_free: u32,
    len: u32,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab::new()
    }
}

impl<T> Slab<T> {
    pub(crate) const fn new() -> Slab<T> {
        Slab {
            slots: SmallVec::new_const(),
            next_free: NONE,
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    pub(crate) fn insert(&mut self, value: T) -> usize {
        self.len += 1;
        if self.next_free == NONE {
            assert!(self.slots.len() < NONE as usize, "slab full");
            self.slots.push(Slot::Occupied(value));
            return self.slots.len() - 1;
        }
        let idx = self.next_free as usize;
        match mem::replace(&mut self.slots[idx], Slot::Occupied(value)) {
            Slot::Vacant(next) => self.next_free = next,
            Slot::Occupied(_) => unreachable!("the free list points at an occupied slot"),
        }
        idx
    }

    pub(crate) fn get_mut(&mut self, idx: usize) -> Option<&mut T> {
        match self.slots.get_mut(idx) {
            Some(Slot::Occupied(value)) => Some(value),
            _ => None,
        }
    }

    /// Removes the entry at `idx` if `pred` accepts it.
    pub(crate) fn remove_if(&mut self, idx: usize, pred: impl FnOnce(&T) -> bool) -> Option<T> {
        match self.slots.get(idx) {
            Some(Slot::Occupied(value)) if pred(value) => {}
            _ => return None,
        }
        let Slot::Occupied(value) =
            mem::replace(&mut self.slots[idx], Slot::Vacant(self.next_free))
        else {
            unreachable!("checked above")
        };
        // `idx < slots.len() <= u32::MAX`: checked by `insert`.
        self.next_free = idx as u32;
        self.len -= 1;
        if self.len == 0 {
            if self.slots.capacity() > KEEP_SLOTS {
                *self = Slab::new();
            } else {
                self.slots.clear();
                self.next_free = NONE;
            }
        }
        Some(value)
    }

    /// Takes every entry out (vacant slots included), leaving it empty.
    pub(crate) fn take(&mut self) -> Slots<T> {
        mem::take(self).slots
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn occupied<T>(slots: Slots<T>) -> impl Iterator<Item = T> {
        slots.into_iter().filter_map(|slot| match slot {
            Slot::Occupied(value) => Some(value),
            Slot::Vacant(_) => None,
        })
    }

    #[test]
    fn insert_remove_reuse() {
        let mut slab = Slab::new();
        let a = slab.insert('a');
        let b = slab.insert('b');
        let c = slab.insert('c');
        assert_eq!(slab.len(), 3);
        assert_eq!(slab.remove_if(b, |_| true), Some('b'));
        assert_eq!(slab.remove_if(b, |_| true), None, "twice");
        assert_eq!(slab.remove_if(a, |v| *v == 'x'), None, "predicate");
        let d = slab.insert('d');
        assert_eq!(d, b, "vacant slot reused");
        *slab.get_mut(d).unwrap() = 'e';
        assert_eq!(slab.remove_if(99, |_| true), None, "out of range");
        let values: Vec<_> = occupied(slab.take()).collect();
        assert_eq!(values, vec!['a', 'e', 'c']);
        assert_eq!(slab.len(), 0);
        let _ = c;
    }

    #[test]
    fn emptied_slab_keeps_small_and_frees_large() {
        let mut slab = Slab::new();
        let keys: Vec<_> = (0..10).map(|i| slab.insert(i)).collect();
        for k in keys {
            slab.remove_if(k, |_| true);
        }
        assert!(slab.slots.spilled(), "small slab keeps its memory");
        let keys: Vec<_> = (0..1000).map(|i| slab.insert(i)).collect();
        for k in keys {
            slab.remove_if(k, |_| true);
        }
        assert!(!slab.slots.spilled(), "a burst is released");
    }
}
