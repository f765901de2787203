//! Non-cancelable links in a context chain: request-scoped values, names
//! and `without_cancel`.
//!
//! A link is one allocation holding its value inline (`Link<T>`, unsized to
//! `Link<dyn Any>` inside [`Context`]). It caches its nearest cancelable
//! ancestor so that `err()` and `done()` below a value are O(1), not a walk.
//!
//! It also carries a summary of the value types above it ([`TypeBits`]: a
//! 64-bit Bloom filter), so that looking up a type that is not there — the
//! common case for optional values, and Go's `DeepValue` benchmarks — stops
//! at the first link instead of walking the whole chain. The summary covers
//! the link's *segment*: the links between it and its cached scope (the
//! nearest cancelable ancestor), whose own summaries are unknown to it. A
//! lookup that misses a segment jumps straight to the scope's parent. Below
//! `without_cancel` (no scope, but values continue upward through cancelable
//! nodes) the summary is "everything", so lookups there simply walk.

use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::hash::{Hash, Hasher};
use std::mem;
use std::sync::Arc;

use crate::context::Context;
use crate::node::{CancelNode, unlink_chain};

/// What a link adds to the chain.
#[derive(Clone, Copy, Debug)]
pub(crate) enum LinkKind {
    /// `with_value`: a value of the type `type_id`, named `type_name`.
    Value {
        type_id: TypeId,
        type_name: &'static str,
    },
    /// `without_cancel`: values pass, cancellation and deadline stop here.
    WithoutCancel,
    /// `named`: the value is the name, a `Cow<'static, str>`.
    Named,
}

pub(crate) struct Link<V: ?Sized + Any + Send + Sync> {
    pub(crate) parent: Context,
    /// The nearest cancelable ancestor (`None` below `without_cancel` or a
    /// root): what `err`, `cause`, `deadline` and `done` consult.
    pub(crate) scope: Option<Arc<CancelNode>>,
    pub(crate) kind: LinkKind,
    /// The value types on this link's segment, this link's included.
    pub(crate) types: TypeBits,
    pub(crate) value: V,
}

/// A one-word Bloom filter of value types: two bits, picked by a hash of the
/// `TypeId`, set for every type that may be present. A clear bit is a certain
/// miss; both set means "look". (Two bits per type: fewer false "look"s than
/// one for the handful of value types a request chain typically carries.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TypeBits(u64);

impl TypeBits {
    pub(crate) const NONE: TypeBits = TypeBits(0);
    /// Unknown: every type may be present.
    pub(crate) const ALL: TypeBits = TypeBits(u64::MAX);

    /// The bit of one type.
    #[inline]
    pub(crate) fn of(type_id: TypeId) -> TypeBits {
        let mut hasher = Fold(0);
        type_id.hash(&mut hasher);
        let hash = hasher.finish();
        TypeBits(1 << (hash >> 58) | 1 << ((hash >> 52) & 63))
    }

    /// Whether every bit of `bits` (one type's) is set.
    #[inline]
    pub(crate) fn may_contain(self, bits: TypeBits) -> bool {
        self.0 & bits.0 == bits.0
    }

    #[inline]
    fn with(self, other: TypeBits) -> TypeBits {
        TypeBits(self.0 | other.0)
    }
}

/// A multiply-fold hasher for [`TypeId`]s, which are already uniformly
/// distributed hashes: mixing them once is enough, and it folds to a
/// constant when the type is known at compile time.
struct Fold(u64);

impl Hasher for Fold {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// The summary a new link under `parent` starts from: the parent link's, if
/// the segment continues through it (see the module docs).
#[inline]
fn inherited_types(parent: &Context) -> TypeBits {
    match parent.link() {
        Some(link) => link.types,
        // A cancelable node (a new segment) or a root.
        None => TypeBits::NONE,
    }
}

/// The erased link a [`Context`] holds.
pub(crate) type DynLink = Link<dyn Any + Send + Sync>;

impl<V: ?Sized + Any + Send + Sync> Drop for Link<V> {
    fn drop(&mut self) {
        // Release the cached scope first, so the parent chain may be unique.
        self.scope = None;
        unlink_chain(mem::take(&mut self.parent));
    }
}

pub(crate) fn value<T: Send + Sync + 'static>(parent: &Context, value: T) -> Arc<DynLink> {
    Arc::new(Link {
        parent: parent.clone(),
        scope: parent.scope().cloned(),
        kind: LinkKind::Value {
            type_id: TypeId::of::<T>(),
            type_name: std::any::type_name::<T>(),
        },
        types: inherited_types(parent).with(TypeBits::of(TypeId::of::<T>())),
        value,
    })
}

pub(crate) fn named(parent: &Context, name: Cow<'static, str>) -> Arc<DynLink> {
    Arc::new(Link {
        parent: parent.clone(),
        scope: parent.scope().cloned(),
        kind: LinkKind::Named,
        types: inherited_types(parent),
        value: name,
    })
}

pub(crate) fn without_cancel(parent: &Context) -> Arc<DynLink> {
    Arc::new(Link {
        parent: parent.clone(),
        scope: None,
        kind: LinkKind::WithoutCancel,
        // No scope, but the chain above goes on through cancelable nodes,
        // whose segments this link cannot summarize.
        types: TypeBits::ALL,
        value: (),
    })
}

/// For `Link`'s side of [`unlink_chain`]: a link that is uniquely owned gives
/// up its parent. (Links are never weakly referenced, so `get_mut` sees
/// uniqueness exactly.)
pub(crate) fn take_parent(mut link: Arc<DynLink>) -> Option<Context> {
    let link = Arc::get_mut(&mut link)?;
    link.scope = None;
    Some(mem::take(&mut link.parent))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct A;
    struct B;
    struct C;

    fn types(ctx: &Context) -> TypeBits {
        ctx.link().expect("a link").types
    }

    #[test]
    fn a_type_is_in_the_summary_of_every_link_below_it_on_its_segment() {
        let a = TypeBits::of(TypeId::of::<A>());
        let b = TypeBits::of(TypeId::of::<B>());
        let root = Context::background().with_value(A);
        let below = root.with_value(B).named("n");
        assert!(types(&root).may_contain(a));
        assert!(types(&below).may_contain(a) && types(&below).may_contain(b));
        // A cancelable node starts a new segment: the lookup jumps over it
        // to the segment above, so the summary does not need `A`.
        let (scoped, _g) = below.with_cancel();
        let under = scoped.with_value(C);
        assert_eq!(types(&under), TypeBits::of(TypeId::of::<C>()));
        assert!(under.value::<A>().is_some() && under.value::<B>().is_some());
        // `without_cancel` cannot summarize the segments above it.
        assert_eq!(types(&under.without_cancel()), TypeBits::ALL);
        assert_eq!(types(&under.without_cancel().with_value(A)), TypeBits::ALL);
    }

    #[test]
    fn the_filter_rules_out_what_is_absent() {
        // With few types most absent ones are ruled out by the bits alone
        // (a statistical property of the hash: 2 of 64 bits per type).
        let one = TypeBits::of(TypeId::of::<A>());
        assert!(
            (1..=2).contains(&one.0.count_ones()),
            "one or two bits per type"
        );
        assert!(!TypeBits::NONE.may_contain(one));
        assert!(TypeBits::ALL.may_contain(one));
    }
}
