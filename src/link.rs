//! Non-cancelable links in a context chain: request-scoped values, names
//! and `without_cancel`.
//!
//! A link is one allocation holding its value inline (`Link<T>`, unsized to
//! `Link<dyn Any>` inside [`Context`]). It caches its nearest cancelable
//! ancestor so that `err()` and `done()` below a value are O(1), not a walk.

use std::any::{Any, TypeId};
use std::borrow::Cow;
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
    pub(crate) value: V,
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
        value,
    })
}

pub(crate) fn named(parent: &Context, name: Cow<'static, str>) -> Arc<DynLink> {
    Arc::new(Link {
        parent: parent.clone(),
        scope: parent.scope().cloned(),
        kind: LinkKind::Named,
        value: name,
    })
}

pub(crate) fn without_cancel(parent: &Context) -> Arc<DynLink> {
    Arc::new(Link {
        parent: parent.clone(),
        scope: None,
        kind: LinkKind::WithoutCancel,
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
