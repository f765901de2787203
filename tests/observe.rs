//! Names and the always-on counters of `stats()`.
//!
//! One test function: the counters are process-wide.

use std::thread;
use std::time::Duration;

use cancelctx::{Context, Error};

#[test]
fn names_and_counters() {
    // Names show in Display, are inherited, and the nearest wins.
    let named = Context::background().named("db-query");
    assert_eq!(named.to_string(), "context.Background.Named(db-query)");
    let (ctx, _g) = named.with_timeout(Duration::from_secs(60));
    assert_eq!(ctx.name(), Some("db-query"));
    let inner = ctx.with_value(1u8).named(String::from("row-fetch"));
    assert_eq!(inner.name(), Some("row-fetch"));
    assert_eq!(Context::background().name(), None);
    assert_eq!(
        named.value::<std::borrow::Cow<'static, str>>(),
        None,
        "a name is not a value"
    );
    drop((ctx, _g));

    // Contexts done at construction count once each, and how they ended.
    let before = cancelctx::stats().contexts;
    std::thread::spawn(|| {
        let (parent, guard) = Context::background().with_cancel();
        guard.cancel();
        for _ in 0..10 {
            let (child, _g) = parent.with_timeout(Duration::from_secs(60));
            let (_grandchild, _g) = child.with_cancel();
        }
        for _ in 0..5 {
            let (_ctx, _g) = Context::background().with_timeout(Duration::ZERO);
        }
    })
    .join()
    .unwrap();
    let after = cancelctx::stats().contexts;
    assert_eq!(after.created - before.created, 26);
    assert_eq!(after.canceled - before.canceled, 1);
    assert_eq!(after.parent_ended - before.parent_ended, 20);
    assert_eq!(after.deadline_exceeded - before.deadline_exceeded, 5);
    assert_eq!(after.not_ended(), before.not_ended());

    // A context seen done is already counted, even when the timer thread
    // ended it a moment ago and the observer only spins on `is_done()`.
    for _ in 0..100 {
        let before = cancelctx::stats().contexts.deadline_exceeded;
        let (ctx, _g) = Context::background().with_timeout(Duration::from_millis(1));
        while !ctx.is_done() {
            std::hint::spin_loop();
        }
        assert_eq!(cancelctx::stats().contexts.deadline_exceeded, before + 1);
    }

    let before = cancelctx::stats().contexts;
    let (a, ga) = Context::background().with_cancel();
    let (_b, _gb) = a.with_cancel();
    let (_c, _gc) = a.with_timeout(Duration::from_secs(60));
    ga.cancel();
    let (d, _gd) = Context::background().with_timeout(Duration::from_millis(1));
    assert_eq!(d.wait_done(), Error::DeadlineExceeded);
    let (_e, _ge) = Context::background().with_timeout(Duration::ZERO);
    // Whoever fired `d` (the timer thread or its waiter) counted it before
    // `d` could be seen done.
    let after = cancelctx::stats().contexts;
    assert!(after.created >= before.created + 5);
    assert!(after.canceled > before.canceled);
    assert!(after.parent_ended >= before.parent_ended + 2);
    assert!(after.deadline_exceeded >= before.deadline_exceeded + 2);
    assert!(after.not_ended() <= after.created);

    // Each thread counts in a shard of its own: seen by `stats()` while the
    // thread runs, and kept when it exits. (Exact: this test is the only
    // one in its process, and nothing else creates contexts now.)
    let before = cancelctx::stats().contexts;
    let (counted_tx, counted_rx) = std::sync::mpsc::channel();
    let (exit_tx, exit_rx) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        for _ in 0..100 {
            let (_ctx, guard) = Context::background().with_cancel();
            guard.cancel();
        }
        counted_tx.send(()).unwrap();
        exit_rx.recv().unwrap();
    });
    counted_rx.recv().unwrap();
    let running = cancelctx::stats().contexts;
    assert_eq!(running.created - before.created, 100);
    assert_eq!(running.canceled - before.canceled, 100);
    exit_tx.send(()).unwrap();
    worker.join().unwrap();
    let exited = cancelctx::stats().contexts;
    assert_eq!(exited, running, "a thread's counts outlive it");

    // `stats()` read again and again while 16 threads count and exit: never
    // going back, and exact once they have all exited.
    {
        let before = cancelctx::stats().contexts;
        let workers: Vec<_> = (0..16)
            .map(|_| {
                thread::spawn(|| {
                    for _ in 0..500 {
                        let (ctx, guard) = Context::background().with_cancel();
                        let (_child, _g) = ctx.with_cancel();
                        guard.cancel();
                    }
                })
            })
            .collect();
        let mut last = before;
        while workers.iter().any(|w| !w.is_finished()) {
            let now = cancelctx::stats().contexts;
            assert!(now.created >= last.created, "{now:?} after {last:?}");
            assert!(now.canceled >= last.canceled, "{now:?} after {last:?}");
            assert!(
                now.parent_ended >= last.parent_ended,
                "{now:?} after {last:?}"
            );
            last = now;
        }
        for w in workers {
            w.join().unwrap();
        }
        let after = cancelctx::stats().contexts;
        assert_eq!(after.created - before.created, 16 * 1000);
        assert_eq!(after.canceled - before.canceled, 16 * 500);
        assert_eq!(after.parent_ended - before.parent_ended, 16 * 500);
    }
}
