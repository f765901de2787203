//! The live registry and leak detector (feature `registry`).

use std::time::Duration;

use cancelctx::Context;
use cancelctx::registry::{self, LeakCheck};

/// `LeakCheck` is process-wide: tests that use it run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn leak_check_catches_a_context_kept_alive() {
    let _serial = serial();
    let check = LeakCheck::start();
    let (kept, guard) = Context::background()
        .named("kept-alive")
        .with_timeout(Duration::from_secs(60));
    guard.detach();
    let err = check.check().expect_err("a live context is a leak");
    assert_eq!(err.contexts.len(), 1);
    let listing = err.to_string();
    assert!(listing.contains("\"kept-alive\""), "{listing}");
    assert!(listing.contains("WithDeadline"), "{listing}");
    drop(kept);
    check.assert_clean();
}

#[test]
fn snapshot_is_a_tree_with_waiters() {
    let _serial = serial();
    let check = LeakCheck::start();
    let (root, _g) = Context::background().named("root-of-tree").with_cancel();
    let (child, _gc) = root.named("child-of-tree").with_cancel();
    let waiter = {
        let child = child.clone();
        std::thread::spawn(move || child.wait_done())
    };
    let waiters = || {
        registry::snapshot()
            .contexts
            .iter()
            .find(|c| c.name.as_deref() == Some("child-of-tree"))
            .map(|c| c.waiters)
    };
    let start = std::time::Instant::now();
    while waiters() != Some(1) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the waiter never showed"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let listing = registry::snapshot().to_string();
    let root_line = listing
        .lines()
        .position(|l| l.contains("root-of-tree"))
        .unwrap();
    let child_line = listing.lines().nth(root_line + 1).unwrap();
    assert!(
        child_line.starts_with("  #") && child_line.contains("child-of-tree"),
        "{listing}"
    );
    drop(_g);
    waiter.join().unwrap();
    drop((root, child, _gc));
    check
        .check_within(Duration::from_secs(10))
        .unwrap_or_else(|leaked| panic!("{leaked}"));
}

/// A leaked chain deeper than a format width can indent (a `u16`) is listed,
/// deep lines saying their depth, and `assert_clean` reports it with an
/// ordinary panic. (Observed before: formatting panicked past depth 32 767,
/// and `assert_clean`, formatting inside its panic, aborted the process.)
#[test]
fn regression_a_deep_leaked_chain_is_listed_and_reported() {
    let _serial = serial();
    let check = LeakCheck::start();
    let mut ctx = Context::background();
    let mut guards = Vec::new();
    for _ in 0..40_000 {
        let (child, guard) = ctx.with_cancel();
        ctx = child;
        guards.push(guard);
    }
    let leaked = check.check().expect_err("the chain is live");
    assert_eq!(leaked.contexts.len(), 40_000);
    let listing = leaked.to_string();
    assert_eq!(listing.lines().count(), 40_001, "a header and a line each");
    assert!(
        listing.contains("[depth 39999] "),
        "the deepest says its depth"
    );
    let report =
        std::panic::catch_unwind(|| check.assert_clean()).expect_err("a leak fails the check");
    let message = report
        .downcast_ref::<String>()
        .expect("a formatted message");
    assert!(message.starts_with("contexts leaked:\n40000 live context(s):"));
    drop(ctx);
    drop(guards);
    check.assert_clean();
}
