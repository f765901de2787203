//! Heap allocations per operation, counted by a global allocator (per
//! thread, so the timer thread and other tests do not disturb the count).
//!
//! Counts are deterministic, unlike times: these are the allocation goals of
//! the crate, asserted (Go's TestAllocs: WithCancel+cancel 5, WithTimeout+
//! cancel 8, WithValue+Value 3, Background 0).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::task::{Context as TaskContext, Waker};
use std::time::Duration;

use cancelctx::Context;

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: defers every operation to `System`; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Makes this thread block once on a contended `parking_lot` lock, the
/// locks the crate uses. The first time a thread blocks on one, it sets up
/// its parking data: two allocations, once per thread. Without this, the
/// rare measured run in which the timer thread holds a lock this thread
/// wants counted them against the operation.
fn park_once() {
    let lock = std::sync::Arc::new(parking_lot::Mutex::new(()));
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let holder = {
        let lock = lock.clone();
        std::thread::spawn(move || {
            let guard = lock.lock();
            held_tx.send(()).unwrap();
            // Long enough that the main thread stops spinning and parks.
            std::thread::sleep(Duration::from_millis(20));
            drop(guard);
        })
    };
    held_rx.recv().unwrap();
    drop(lock.lock());
    holder.join().unwrap();
}

/// Average allocations of `op` over many runs, after a warm-up (which
/// starts the timer thread and grows the slabs once).
fn allocs_per_op(mut op: impl FnMut()) -> f64 {
    for _ in 0..1_000 {
        op();
    }
    const RUNS: usize = 10_000;
    let before = ALLOCS.with(Cell::get);
    for _ in 0..RUNS {
        op();
    }
    (ALLOCS.with(Cell::get) - before) as f64 / RUNS as f64
}

#[test]
fn allocations_per_operation() {
    park_once();
    let bg = Context::background();
    assert_eq!(allocs_per_op(|| drop(Context::background())), 0.0);

    assert_eq!(
        allocs_per_op(|| drop(bg.with_cancel())),
        1.0,
        "with_cancel + cancel"
    );
    let (parent, _g) = bg.with_cancel();
    assert_eq!(
        allocs_per_op(|| drop(parent.with_cancel())),
        1.0,
        "with_cancel under a cancelable parent"
    );

    let timer_parent = bg.with_value(0u8);
    let per_timeout = allocs_per_op(|| drop(timer_parent.with_timeout(Duration::from_secs(3600))));
    assert_eq!(per_timeout, 1.0, "with_timeout + cancel");
    let per_timeout = allocs_per_op(|| drop(parent.with_timeout(Duration::from_secs(3600))));
    assert_eq!(
        per_timeout, 1.0,
        "with_timeout + cancel under a cancelable parent"
    );

    assert_eq!(
        allocs_per_op(|| {
            let ctx = bg.with_value(7u64);
            assert_eq!(ctx.value::<u64>(), Some(&7));
        }),
        1.0,
        "with_value + value"
    );

    let (live, _g) = bg.with_timeout(Duration::from_secs(3600));
    let (ended, guard) = bg.with_cancel();
    guard.cancel();
    let waker = Waker::noop();
    assert_eq!(
        allocs_per_op(|| {
            assert!(live.err().is_none());
            assert!(!live.is_done());
            assert!(live.deadline().is_some());
            assert!(ended.err().is_some());
            assert!(ended.cause().is_some());
            let mut done = ended.done();
            assert!(
                std::pin::Pin::new(&mut done)
                    .poll(&mut TaskContext::from_waker(waker))
                    .is_ready()
            );
            drop(live.clone());
        }),
        0.0,
        "observing and done() on an ended context"
    );
}

use std::future::Future;
