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
