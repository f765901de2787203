//! Integration tests of the public API: the tree, causes, values, names.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use cancelctx::{CancelGuard, Cause, Context, Error};
use common::PATIENCE;

#[derive(Debug)]
struct Boom;
impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("boom")
    }
}
impl std::error::Error for Boom {}

fn assert_send_sync<T: Send + Sync + 'static>() {}

#[test]
fn public_types_are_send_sync_static() {
    assert_send_sync::<Context>();
    assert_send_sync::<CancelGuard>();
    assert_send_sync::<Cause>();
    assert_send_sync::<Error>();
    assert_send_sync::<cancelctx::Done>();
    assert_send_sync::<cancelctx::AfterFunc>();
    assert_send_sync::<cancelctx::Sleep>();
    fn unpin<T: Unpin>() {}
    unpin::<cancelctx::Done>();
    unpin::<cancelctx::Sleep>();
}

#[test]
fn roots_are_never_done() {
    for ctx in [Context::background(), Context::todo(), Context::default()] {
        assert_eq!(ctx.err(), None);
        assert_eq!(ctx.cause().map(|c| c.to_string()), None);
        assert!(!ctx.is_done());
        assert_eq!(ctx.deadline(), None);
        assert_eq!(ctx.remaining(), None);
        assert_eq!(ctx.child_count(), 0);
        assert_eq!(ctx.wait_done_timeout(Duration::from_millis(1)), None);
    }
}

#[test]
fn cancel_reaches_descendants_synchronously() {
    let (a, ga) = Context::background().with_cancel();
    let (b, _gb) = a.with_value(1u8).with_cancel();
    let (c, _gc) = b.with_timeout(Duration::from_secs(3600));
    let d = c.with_value("x");
    assert_eq!(a.child_count(), 1);
    assert_eq!(b.child_count(), 1);
    ga.cancel();
    for ctx in [&a, &b, &c, &d] {
        assert_eq!(ctx.err(), Some(Error::Canceled), "{ctx}");
        assert_eq!(
            ctx.cause().unwrap().downcast_ref::<Error>(),
            Some(&Error::Canceled)
        );
    }
    assert_eq!(a.child_count(), 0);
}

#[test]
fn child_cancel_does_not_touch_parent_and_unregisters() {
    let (parent, _g) = Context::background().with_cancel();
    let (child, gc) = parent.with_cancel();
    assert_eq!(parent.child_count(), 1);
    gc.cancel();
    assert!(child.is_done());
    assert!(!parent.is_done());
    assert_eq!(parent.child_count(), 0);
}

#[test]
fn first_cause_wins_and_is_inherited() {
    let (parent, gp) = Context::background().with_cancel();
    let (child, gc) = parent.with_cancel();
    gc.cancel_with_cause(Boom);
    gp.cancel_with_cause(Cause::msg("parent later"));
    gc.cancel_with_cause(Cause::msg("again"));
    assert!(child.cause().unwrap().is::<Boom>());
    assert_eq!(parent.cause().unwrap().to_string(), "parent later");

    let (parent, gp) = Context::background().with_cancel();
    let (child, _gc) = parent.with_cancel();
    gp.cancel_with_cause(Boom);
    assert_eq!(child.err(), Some(Error::Canceled));
    assert!(child.cause().unwrap().is::<Boom>());
    // A child of a done parent is done at construction, with its cause.
    let (late, _g) = parent.with_timeout(Duration::from_secs(1));
    assert_eq!(late.err(), Some(Error::Canceled));
    assert!(late.cause().unwrap().is::<Boom>());
    assert_eq!(parent.child_count(), 0);
}

#[test]
fn dropping_the_guard_cancels_and_detach_does_not() {
    let (ctx, guard) = Context::background().with_cancel();
    drop(guard);
    assert_eq!(ctx.err(), Some(Error::Canceled));

    let (parent, gp) = Context::background().with_cancel();
    let (ctx, guard) = parent.with_cancel();
    guard.detach();
    assert!(!ctx.is_done());
    assert_eq!(parent.child_count(), 1);
    drop(ctx);
    // Nobody can observe it: the parent's record is gone at once.
    assert_eq!(parent.child_count(), 0);
    drop(gp);
}

#[test]
fn unobservable_context_releases_parent_link_even_with_guard_alive() {
    let (parent, _gp) = Context::background().with_cancel();
    let (child, guard) = parent.with_timeout(Duration::from_secs(3600));
    assert_eq!(parent.child_count(), 1);
    drop(child);
    assert_eq!(parent.child_count(), 0);
    guard.cancel(); // a no-op now, and no panic
}

#[test]
fn past_deadline_and_zero_timeout_are_done_at_construction() {
    let (ctx, _g) = Context::background().with_timeout(Duration::ZERO);
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert_eq!(ctx.remaining(), Some(Duration::ZERO));
    let past = Instant::now() - Duration::from_secs(1);
    let (ctx, _g) = Context::background().with_deadline_cause(past, Boom);
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert!(ctx.cause().unwrap().is::<Boom>());
    assert!(ctx.err().unwrap().is_timeout());
    // `done()` is ready at once once `err()` is set (Go issue #75533).
    let (_counter, waker) = common::CountingWaker::new();
    assert!(common::poll_once(&mut ctx.done(), &waker).is_ready());
}

#[test]
fn done_at_construction_behaves_like_canceled() {
    // A plain parent cause, an own deadline: the child is done, reports the
    // parent's error and a plain cause, keeps its own (earlier) deadline, is
    // not registered, and its descendants are done at construction too.
    let (parent, gp) = Context::background().with_timeout(Duration::from_secs(3600));
    gp.cancel();
    let (child, guard) = parent.with_timeout(Duration::from_secs(60));
    assert_eq!(child.err(), Some(Error::Canceled));
    assert_eq!(
        child.cause().unwrap().downcast_ref::<Error>(),
        Some(&Error::Canceled)
    );
    assert!(child.deadline().unwrap() < parent.deadline().unwrap());
    assert!(child.to_string().contains(".WithDeadline("), "{child}");
    assert_eq!(parent.child_count(), 0);
    let (grandchild, _g) = child.with_value(1u8).with_cancel();
    assert_eq!(grandchild.err(), Some(Error::Canceled));
    assert_eq!(child.child_count(), 0);
    // Waiting, cancelling and dropping a done node are all immediate.
    assert_eq!(grandchild.wait_done(), Error::Canceled);
    guard.cancel_with_cause(Boom);
    assert!(!child.cause().unwrap().is::<Boom>(), "first cause wins");
    let (_counter, waker) = common::CountingWaker::new();
    assert!(common::poll_once(&mut child.done(), &waker).is_ready());
    // A past deadline under a done parent: the parent's end comes first.
    let (past, _g) = parent.with_deadline_cause(Instant::now() - Duration::from_secs(1), Boom);
    assert_eq!(past.err(), Some(Error::Canceled));
    assert!(!past.cause().unwrap().is::<Boom>());
}

#[test]
fn deadline_cause_only_for_deadline() {
    let (ctx, g) = Context::background().with_timeout_cause(Duration::from_secs(3600), Boom);
    g.cancel();
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(
        ctx.cause().unwrap().downcast_ref::<Error>(),
        Some(&Error::Canceled)
    );
}

#[test]
fn child_deadline_capped_by_parent() {
    let soon = Instant::now() + Duration::from_secs(100);
    let (parent, _gp) = Context::background().with_deadline(soon);
    let (child, _gc) = parent.with_timeout(Duration::from_secs(1000));
    assert_eq!(child.deadline(), Some(soon));
    assert!(child.to_string().ends_with(".WithCancel"), "{child}");
    let (earlier, _ge) = parent.with_timeout(Duration::from_secs(1));
    assert!(earlier.deadline().unwrap() < soon);
    assert!(earlier.to_string().contains(".WithDeadline("), "{earlier}");
}

#[test]
fn deadline_fires_not_early_within_patience() {
    let start = Instant::now();
    let (ctx, _g) = Context::background().with_timeout(Duration::from_millis(20));
    let deadline = ctx.deadline().unwrap();
    assert_eq!(
        ctx.wait_done_timeout(PATIENCE),
        Some(Error::DeadlineExceeded)
    );
    assert!(Instant::now() >= deadline, "fired early");
    assert!(start.elapsed() >= Duration::from_millis(20));
    assert_eq!(
        ctx.cause().unwrap().downcast_ref::<Error>(),
        Some(&Error::DeadlineExceeded)
    );
}

#[test]
fn timeout_propagates_to_children() {
    let (parent, _g) = Context::background().with_timeout(Duration::from_millis(5));
    let (child, _gc) = parent.with_cancel();
    assert_eq!(
        child.wait_done_timeout(PATIENCE),
        Some(Error::DeadlineExceeded)
    );
    assert_eq!(parent.child_count(), 0);
}

#[test]
fn detached_timeout_still_fires_while_observed() {
    let (ctx, guard) = Context::background().with_timeout(Duration::from_millis(5));
    guard.detach();
    assert_eq!(
        ctx.wait_done_timeout(PATIENCE),
        Some(Error::DeadlineExceeded)
    );
}

#[test]
fn hostile_durations_do_not_panic() {
    let root = Context::background();
    let far = [
        Duration::MAX,
        Duration::MAX - Duration::from_nanos(1),
        Duration::from_secs(u64::MAX),
        Duration::from_secs(u64::MAX / 2),
        Duration::from_secs(1 << 40),
    ];
    for d in far {
        let (ctx, g) = root.with_timeout(d);
        assert!(!ctx.is_done());
        let _ = ctx.remaining();
        let _ = ctx.to_string();
        assert_eq!(ctx.wait_done_timeout(Duration::from_millis(1)), None);
        assert_eq!(ctx.sleep_blocking(Duration::from_nanos(1)), Ok(()));
        let (child, _gc) = ctx.with_timeout_cause(d, Boom);
        drop(g);
        assert_eq!(child.wait_done_timeout(d), Some(Error::Canceled));
    }
    for d in [Duration::ZERO, Duration::from_nanos(1)] {
        let (ctx, _g) = root.with_timeout_cause(d, Boom);
        assert_eq!(
            ctx.wait_done_timeout(PATIENCE),
            Some(Error::DeadlineExceeded)
        );
        assert!(ctx.cause().unwrap().is::<Boom>());
    }
    let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    let (ctx, _g) = root.with_deadline(far);
    assert_eq!(ctx.deadline(), Some(far));
    assert!(!ctx.is_done());
    let long_ago = Instant::now()
        .checked_sub(Duration::from_secs(3600))
        .unwrap_or_else(Instant::now);
    let (ctx, _g) = root.with_deadline(long_ago);
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert_eq!(
        ctx.wait_done_deadline(long_ago),
        Some(Error::DeadlineExceeded)
    );
    let (live, _g) = root.with_cancel();
    assert_eq!(live.wait_done_deadline(long_ago), None);
}

#[test]
fn duration_max_means_no_deadline() {
    let (ctx, _g) = Context::background().with_timeout(Duration::MAX);
    assert_eq!(ctx.deadline(), None);
    assert_eq!(ctx.remaining(), None);
    assert!(!ctx.is_done());
}

#[test]
fn values_are_keyed_by_type_nearest_wins() {
    struct Key(&'static str);
    let ctx = Context::background()
        .with_value(Key("outer"))
        .with_value(5u32);
    let (mid, _g) = ctx.with_cancel();
    let inner = mid.with_value(Key("inner"));
    assert_eq!(inner.value::<Key>().unwrap().0, "inner");
    assert_eq!(mid.value::<Key>().unwrap().0, "outer");
    assert_eq!(inner.value::<u32>(), Some(&5));
    assert_eq!(inner.value::<u64>(), None);
    assert_eq!(inner.without_cancel().value::<Key>().unwrap().0, "inner");
    // `without_cancel` is not a value of type `()`.
    assert_eq!(Context::background().without_cancel().value::<()>(), None);
}

#[test]
fn without_cancel_drops_cancellation_and_deadline() {
    let (ctx, g) = Context::background().with_timeout(Duration::from_secs(60));
    let wc = ctx.without_cancel();
    assert_eq!(wc.deadline(), None);
    g.cancel();
    assert!(!wc.is_done());
    assert_eq!(wc.cause().map(|c| c.to_string()), None);
    let (child, gc) = wc.with_cancel();
    assert!(!child.is_done());
    drop(gc);
    assert!(child.is_done());
}

#[test]
fn display_names_the_chain_like_go() {
    struct Key;
    let bg = Context::background();
    assert_eq!(bg.to_string(), "context.Background");
    assert_eq!(Context::todo().to_string(), "context.TODO");
    let (c, _g) = bg.with_cancel();
    assert_eq!(c.to_string(), "context.Background.WithCancel");
    let (t, _g2) = bg.with_timeout(Duration::from_secs(5));
    assert!(
        t.to_string()
            .starts_with("context.Background.WithDeadline("),
        "{t}"
    );
    let v = c.with_value(Key);
    assert_eq!(
        v.to_string(),
        format!(
            "context.Background.WithCancel.WithValue({}, ..)",
            std::any::type_name::<Key>()
        )
    );
    assert_eq!(v.without_cancel().to_string(), format!("{v}.WithoutCancel"));
    let dbg = format!("{v:?}");
    assert!(dbg.contains("err: None"), "{dbg}");
}

#[test]
fn many_thread_cancel_storm_wakes_every_waiter() {
    for _ in 0..20 {
        let (root, guard) = Context::background().with_cancel();
        let mut waiters = Vec::new();
        for i in 0..8 {
            let (child, g) = root.with_cancel();
            waiters.push(std::thread::spawn(move || {
                let _g = g;
                if i % 2 == 0 {
                    child.wait_done_timeout(PATIENCE)
                } else {
                    futures::executor::block_on(async { Some(child.done().await) })
                }
            }));
        }
        let cancellers: Vec<_> = (0..2)
            .map(|_| {
                let root = root.clone();
                std::thread::spawn(move || {
                    let (c, g) = root.with_cancel();
                    drop(g);
                    c.is_done()
                })
            })
            .collect();
        guard.cancel();
        for w in waiters {
            assert_eq!(w.join().unwrap(), Some(Error::Canceled));
        }
        for c in cancellers {
            assert!(c.join().unwrap());
        }
        assert_eq!(root.child_count(), 0);
    }
}

#[test]
fn concurrent_cancels_of_overlapping_subtrees_are_synchronous() {
    for _ in 0..200 {
        let (a, ga) = Context::background().with_cancel();
        let (b, gb) = a.with_cancel();
        let mut leaves = Vec::new();
        let mut guards = Vec::new();
        for _ in 0..16 {
            let (leaf, g) = b.with_cancel();
            leaves.push(leaf);
            guards.push(g);
        }
        let t = {
            let leaves = leaves.clone();
            std::thread::spawn(move || {
                gb.cancel();
                leaves.iter().all(Context::is_done)
            })
        };
        ga.cancel();
        assert!(
            leaves.iter().all(Context::is_done),
            "cancel returned before the subtree was done"
        );
        assert!(t.join().unwrap());
        drop(guards);
    }
}

#[test]
fn million_deep_chain_on_a_small_stack() {
    let handle = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let (root, guard) = Context::background().with_cancel();
            let mut ctx = root.clone();
            let mut guards = Vec::with_capacity(1_000_000);
            for i in 0..1_000_000u32 {
                if i % 3 == 0 {
                    ctx = ctx.with_value(i);
                } else {
                    let (c, g) = ctx.with_cancel();
                    ctx = c;
                    guards.push(g);
                }
            }
            assert_eq!(ctx.value::<u32>(), Some(&999_999));
            struct Absent;
            assert!(ctx.value::<Absent>().is_none());
            assert!(!ctx.is_done());
            guard.cancel();
            assert_eq!(ctx.err(), Some(Error::Canceled));
            drop(guards);
            drop(root);
            drop(ctx); // the whole chain goes here, iteratively
        })
        .unwrap();
    handle.join().unwrap();
}

/// Every kind of link and node in one million-deep chain, on a 256 KiB
/// stack: lookups, names, Display, Debug, deadline, remaining, an expiry
/// fired from the leaf, cancel and drop. None may recurse.
#[test]
fn mixed_million_chain_on_a_small_stack() {
    thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            struct Top(u32);
            struct Absent;
            let (root, root_guard) = Context::background().with_value(Top(7)).with_cancel();
            let mut ctx = root.clone();
            let mut guards = Vec::new();
            let far = Instant::now() + Duration::from_secs(3600);
            for i in 0..1_000_000u32 {
                ctx = match i % 6 {
                    0 => ctx.with_value(i),
                    1 => ctx.named("n"),
                    2 => ctx.without_cancel(),
                    3 => {
                        let (c, g) = ctx.with_cancel();
                        guards.push(g);
                        c
                    }
                    4 => {
                        let (c, g) = ctx.with_deadline(far);
                        guards.push(g);
                        c
                    }
                    _ => {
                        let (c, g) = ctx.with_timeout(Duration::from_secs(7200));
                        guards.push(g);
                        c
                    }
                };
            }
            assert_eq!(ctx.value::<Top>().map(|t| t.0), Some(7));
            assert_eq!(ctx.value::<u32>(), Some(&999_996));
            assert!(ctx.value::<Absent>().is_none());
            assert_eq!(ctx.name(), Some("n"));
            let text = ctx.to_string();
            assert!(text.starts_with("context.Background.WithValue("));
            let debug = format!("{ctx:?}");
            // (Not compared with `text`: the deadlines' "in ..." differ.)
            assert!(debug.starts_with("Context { name: context.Background.WithValue("));
            assert!(debug.ends_with("err: None, remaining: None, child_count: 0 }"));
            // The leaf is a `with_cancel` right under `without_cancel`.
            assert_eq!(ctx.deadline(), None);
            assert_eq!(ctx.remaining(), None);
            assert!(!ctx.is_done());
            root_guard.cancel();
            // The leaf sits below `without_cancel`: only the nearest scope
            // above it (its own) ends with its guard.
            assert!(!ctx.is_done());
            drop(guards);
            assert_eq!(ctx.err(), Some(Error::Canceled));
            drop(root);
            drop(ctx);

            // An inherited deadline that passes, fired by a check at the
            // bottom of a million nodes that inherit it.
            let (top, _g) = Context::background().with_timeout(Duration::from_millis(50));
            let mut ctx = top.clone();
            let mut guards = Vec::new();
            for i in 0..1_000_000u32 {
                ctx = if i % 2 == 0 {
                    ctx.with_value(i).named("x")
                } else {
                    let (c, g) = ctx.with_cancel();
                    guards.push(g);
                    c
                };
            }
            let deadline = ctx.deadline().unwrap();
            while Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            assert_eq!(ctx.remaining(), Some(Duration::ZERO));
            assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
            drop(top);
            drop(guards);
            drop(ctx);
        })
        .unwrap()
        .join()
        .unwrap();
}

/// Values through every kind of link, with enough types that the 64-bit
/// summaries are full of false positives: the nearest value of each type,
/// and nothing for an absent one. (Holds.)
#[test]
fn values_nearest_wins_through_every_kind_of_link() {
    macro_rules! types {
        ($($t:ident)*) => {
            $( #[derive(Debug, PartialEq)] struct $t(usize); )*
            fn add(ctx: &Context, i: usize, guards: &mut Vec<cancelctx::CancelGuard>) -> Context {
                let mut ctx = ctx.clone();
                let mut k = 0;
                $(
                    ctx = ctx.with_value($t(i * 1000 + k));
                    if k % 7 == 3 {
                        let (c, g) = ctx.with_timeout(Duration::from_secs(3600 + k as u64));
                        guards.push(g);
                        ctx = c.named("x");
                    }
                    k += 1;
                )*
                let _ = k;
                ctx
            }
            fn check(ctx: &Context, i: usize) {
                let mut k = 0;
                $(
                    assert_eq!(ctx.value::<$t>(), Some(&$t(i * 1000 + k)));
                    k += 1;
                )*
                let _ = k;
            }
        };
    }
    types!(T0 T1 T2 T3 T4 T5 T6 T7 T8 T9 T10 T11 T12 T13 T14 T15 T16 T17 T18 T19
           T20 T21 T22 T23 T24 T25 T26 T27 T28 T29 T30 T31 T32 T33 T34 T35 T36 T37 T38 T39);
    struct Absent;
    let mut guards = Vec::new();
    let first = add(&Context::background(), 1, &mut guards);
    check(&first, 1);
    assert!(first.value::<Absent>().is_none());
    let detached = first.without_cancel();
    check(&detached, 1);
    let (under, _g) = detached.with_cancel();
    let second = add(&under.named("y"), 2, &mut guards);
    check(&second, 2);
    check(&under, 1);
    assert!(second.value::<Absent>().is_none());
    assert_eq!(second.value::<u8>(), None);
    let third = second.with_value(5u8).without_cancel().with_value(6u8);
    assert_eq!(third.value::<u8>(), Some(&6));
    check(&third, 2);
    drop(guards);
    assert!(!third.is_done());
    check(&third, 2);
}
