//! Resources are released at once: the timer heap and parents' records.
//!
//! One test function on purpose: it reads the global timer's `armed`
//! count, which other tests in the same process would disturb.

use std::time::Duration;

use cancelctx::Context;
use cancelctx_timer::Timer;

#[test]
fn resources_are_released_at_once() {
    let timer = Timer::global();
    let armed = || timer.stats().armed;
    assert_eq!(armed(), 0);

    // Canceled (guard dropped) timeouts leave the heap.
    let (root, _g) = Context::background().with_cancel();
    let mut pairs = Vec::new();
    for _ in 0..10_000 {
        pairs.push(root.with_timeout(Duration::from_secs(3600)));
    }
    assert_eq!(armed(), 10_000);
    assert_eq!(root.child_count(), 10_000);
    drop(pairs);
    assert_eq!(armed(), 0);
    assert_eq!(root.child_count(), 0);

    // Detached timeouts that nobody can observe leave it too.
    let mut contexts = Vec::new();
    for _ in 0..1_000 {
        let (ctx, guard) = root.with_timeout(Duration::from_secs(3600));
        guard.detach();
        contexts.push(ctx);
    }
    assert_eq!(armed(), 1_000);
    drop(contexts);
    assert_eq!(armed(), 0);
    assert_eq!(root.child_count(), 0);

    // A million-deep detached chain, dropped on a small stack.
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let mut ctx = Context::background();
            for _ in 0..1_000_000 {
                let (c, g) = ctx.with_timeout(Duration::from_secs(3600));
                g.detach();
                ctx = c.with_value(0u8);
            }
            drop(ctx);
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(armed(), 0);

    // An `after_func` keeps a detached context observable until it runs.
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let (ctx, guard) = root.with_timeout(Duration::from_millis(5));
        guard.detach();
        let _registration = ctx.after_func(move || tx.send(()).unwrap());
    }
    assert_eq!(root.child_count(), 1);
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the callback ran at the deadline");
    common_eventually(|| root.child_count() == 0 && armed() == 0);
}

fn common_eventually(mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "condition never held"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}
