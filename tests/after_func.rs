//! `after_func`: runs once, asynchronously, never inline; stop races.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use cancelctx::Context;
use common::{PATIENCE, eventually};

#[test]
fn runs_once_after_cancel_on_a_pool_thread() {
    let (ctx, guard) = Context::background().with_cancel();
    let (tx, rx) = mpsc::channel();
    let registration = ctx.after_func(move || {
        tx.send(std::thread::current().name().map(str::to_owned))
            .unwrap();
    });
    assert_eq!(ctx.child_count(), 1);
    assert!(
        rx.recv_timeout(Duration::from_millis(20)).is_err(),
        "ran before cancel"
    );
    guard.cancel();
    let name = rx.recv_timeout(PATIENCE).expect("callback ran").unwrap();
    assert!(name.starts_with("cancelctx-callback-"), "{name}");
    assert!(!registration.stop(), "stop after start returns false");
    assert_eq!(ctx.child_count(), 0);
}

#[test]
fn registering_on_a_done_context_runs_at_once() {
    let (ctx, guard) = Context::background().with_cancel();
    drop(guard);
    let (tx, rx) = mpsc::channel();
    let registration = ctx.after_func(move || tx.send(()).unwrap());
    rx.recv_timeout(PATIENCE).expect("callback ran");
    assert!(!registration.stop());
}

#[test]
fn stop_prevents_the_call() {
    let (ctx, guard) = Context::background().with_cancel();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let registration = ctx.after_func(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    assert!(registration.stop());
    assert!(!registration.stop());
    guard.cancel();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

#[test]
fn a_blocked_callback_blocks_nobody() {
    let (ctx, guard) = Context::background().with_cancel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (tx, rx) = mpsc::channel();
    let _blocker = ctx.after_func(move || {
        let _ = release_rx.recv();
    });
    let _other = ctx.after_func(move || tx.send(()).unwrap());
    guard.cancel(); // returns although one callback blocks
    rx.recv_timeout(PATIENCE).expect("the other callback ran");
    // Deadlines still fire while a callback blocks.
    let (t, _g) = Context::background().with_timeout(Duration::from_millis(2));
    assert!(t.wait_done_timeout(PATIENCE).is_some());
    release_tx.send(()).unwrap();
}

#[test]
fn a_panicking_callback_is_reported_and_the_pool_lives_on() {
    let before = cancelctx::stats().callbacks_panicked;
    let (ctx, guard) = Context::background().with_cancel();
    let _a = ctx.after_func(|| panic!("deliberate test panic"));
    let (tx, rx) = mpsc::channel();
    guard.cancel();
    eventually("the panic was counted", || {
        cancelctx::stats().callbacks_panicked > before
    });
    let (ctx, guard) = Context::background().with_cancel();
    let _b = ctx.after_func(move || tx.send(()).unwrap());
    drop(guard);
    rx.recv_timeout(PATIENCE)
        .expect("pool still runs callbacks");
}

#[test]
fn stop_versus_fire_exactly_one_wins() {
    let mut stopped_ones = Vec::new();
    for _ in 0..500 {
        let (ctx, guard) = Context::background().with_cancel();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let registration = ctx.after_func(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        let canceller = std::thread::spawn(move || guard.cancel());
        let stopped = registration.stop();
        canceller.join().unwrap();
        if stopped {
            stopped_ones.push(ran);
        } else {
            eventually("callback ran", || ran.load(Ordering::SeqCst) == 1);
        }
        assert_eq!(ctx.child_count(), 0);
    }
    // A callback `stop` claimed to prevent would have been handed to the
    // pool by now; give it time to run, once for all of them.
    std::thread::sleep(Duration::from_millis(50));
    for ran in stopped_ones {
        assert_eq!(ran.load(Ordering::SeqCst), 0, "a stopped callback ran");
    }
}

#[test]
fn a_root_never_runs_the_callback_and_stop_succeeds() {
    let registration = Context::background().after_func(|| unreachable!());
    assert!(registration.stop());
    assert!(!registration.stop());
}

#[test]
fn a_callback_may_create_and_cancel_contexts() {
    let (ctx, guard) = Context::background().with_timeout(Duration::from_millis(2));
    let (tx, rx) = mpsc::channel();
    let _r = ctx.after_func(move || {
        let (inner, g) = Context::background().with_timeout(Duration::from_millis(1));
        let reg = inner.after_func(|| {});
        let _ = reg.stop();
        drop(g);
        tx.send(inner.err()).unwrap();
    });
    assert_eq!(
        rx.recv_timeout(PATIENCE).unwrap(),
        Some(cancelctx::Error::Canceled)
    );
    drop(guard);
}
