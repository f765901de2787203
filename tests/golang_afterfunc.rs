//! Ports of Go's context tests (Go version go1.27.3, src/context/afterfunc_test.go,
//! the AfterFunc tests of src/context/x_test.go and the `ExampleAfterFunc_*`
//! examples of src/context/example_test.go), BSD-3-Clause, see
//! THIRD-PARTY-NOTICES.md.
//!
//! Go's `stop := AfterFunc(ctx, f)` is `let stop = ctx.after_func(f)` and
//! `stop()` is `stop.stop()`. The crate's contract beyond Go's: `f` runs on a
//! crate-owned callback pool, never inline in `cancel`, exactly once;
//! `stop()` returns true iff that call prevented `f` from running; dropping the
//! `AfterFunc` leaves `f` registered; a registration counts in the context's
//! `child_count()` until it runs or is stopped. `f` running is observed through
//! channels with generous timeouts.
//!
//! # Adaptations
//!
//! afterfunc_test.go tests AfterFunc-aware *custom* parents: `afterFuncContext`
//! is a user-defined `Context` with an `AfterFunc` method, through which
//! `WithCancel`, `WithTimeout` and `AfterFunc` register on it. Rust has no
//! `Context` trait, so those six tests run against a built-in cancelable parent
//! (`ctx0 = Background().with_cancel()`, `ctx0.cancel(Canceled)` is
//! `guard.cancel()`), and `len(ctx0.afterFuncs)` is `ctx0.child_count()`. What
//! they still check is the observable contract: children and AfterFuncs are
//! registered with the parent, notified when it ends, and unregistered when
//! canceled or stopped. The custom-Context code path itself cannot be ported.
//!
//! # Not ported
//!
//! - `newCustomContext` / `customContext` (x_test.go): a user-defined `Context`
//!   built on AfterFunc, used only by `TestCause` rows (see tests/golang.rs).
//!
//! The tests after the "Not Go ports" marker check the crate's contract extras
//! listed above; they are not in Go.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use cancelctx::{Cause, Context, Error};

/// Go's `shortDuration`.
const SHORT_DURATION: Duration = Duration::from_millis(1);
/// Go's `veryLongDuration`, as an arbitrary upper bound.
const VERY_LONG_DURATION: Duration = Duration::from_secs(1000 * 60 * 60);
/// Go's `<-time.After(veryLongDuration)` as the bound when waiting for `f`
/// to run: generous, for a loaded 2-core machine.
const QUIESCENT: Duration = Duration::from_secs(10);
/// How long to watch for an `f` that must not run. Go watches for
/// `shortDuration`; a longer window only makes the check stricter.
const NOT_CALLED_WINDOW: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------------------
// x_test.go
// ---------------------------------------------------------------------------

/// Port of Go's TestAfterFuncCalledAfterCancel (x_test.go).
#[test]
fn test_after_func_called_after_cancel() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (donec_tx, donec) = mpsc::channel();
    let stop = ctx.after_func(move || {
        donec_tx.send(()).unwrap(); // close(donec)
    });
    assert_eq!(
        donec.recv_timeout(NOT_CALLED_WINDOW),
        Err(mpsc::RecvTimeoutError::Timeout),
        "AfterFunc called before context is done"
    );
    cancel.cancel();
    assert!(
        donec.recv_timeout(QUIESCENT).is_ok(),
        "AfterFunc not called after context is canceled"
    );
    assert!(!stop.stop(), "stop() = true, want false");
}

/// Port of Go's TestAfterFuncCalledAfterTimeout (x_test.go).
///
/// Adapted: Go drops the `stop` function; here the `AfterFunc` is dropped,
/// which leaves `f` registered. Added: `f` does not run before the deadline.
#[test]
fn test_after_func_called_after_timeout() {
    let start = Instant::now();
    let (ctx, _cancel) = Context::background().with_timeout(SHORT_DURATION);
    let (donec_tx, donec) = mpsc::channel();
    drop(ctx.after_func(move || {
        donec_tx.send(Instant::now()).unwrap();
    }));
    let ran_at = donec
        .recv_timeout(QUIESCENT)
        .expect("AfterFunc not called after context is canceled");
    assert!(
        ran_at >= start + SHORT_DURATION,
        "AfterFunc ran before the context's deadline"
    );
}

/// Port of Go's TestAfterFuncCalledImmediately (x_test.go).
#[test]
fn test_after_func_called_immediately() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let (donec_tx, donec) = mpsc::channel();
    let _stop = ctx.after_func(move || {
        donec_tx.send(()).unwrap();
    });
    assert!(
        donec.recv_timeout(QUIESCENT).is_ok(),
        "AfterFunc not called for already-canceled context"
    );
}

/// Port of Go's TestAfterFuncNotCalledAfterStop (x_test.go).
#[test]
fn test_after_func_not_called_after_stop() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (donec_tx, donec) = mpsc::channel();
    let stop = ctx.after_func(move || {
        donec_tx.send(()).unwrap();
    });
    assert!(stop.stop(), "stop() = false, want true");
    cancel.cancel();
    // The stopped f (and with it the sender) must be gone without running.
    match donec.recv_timeout(NOT_CALLED_WINDOW) {
        Ok(()) => panic!("AfterFunc called for already-canceled context"),
        Err(mpsc::RecvTimeoutError::Timeout | mpsc::RecvTimeoutError::Disconnected) => {}
    }
    assert!(!stop.stop(), "stop() = true, want false");
}

/// Port of Go's TestAfterFuncCalledAsynchronously (x_test.go): canceling a
/// context does not block waiting for AfterFuncs to finish.
///
/// Adapted: `f` blocks on a rendezvous send until the test reads it. Go cancels
/// on the test goroutine and would deadlock (until the test timeout) if `f` ran
/// inline; here `cancel()` runs on a helper thread that reports when it
/// returns, so an inline `f` fails the test instead of hanging it.
#[test]
fn test_after_func_called_asynchronously() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (donec_tx, donec) = mpsc::sync_channel::<thread::ThreadId>(0);
    let stop = ctx.after_func(move || {
        // The channel send blocks until donec is read from.
        let _ = donec_tx.send(thread::current().id());
    });

    let (returned_tx, returned) = mpsc::channel();
    let canceler = thread::spawn(move || {
        cancel.cancel();
        returned_tx.send(thread::current().id()).unwrap();
    });
    let cancel_returned = returned.recv_timeout(QUIESCENT);
    // After cancel returns, read from donec and unblock the AfterFunc.
    let f_thread = donec.recv_timeout(QUIESCENT);
    let canceler_thread = cancel_returned
        .expect("cancel() did not return while the AfterFunc was blocked: AfterFunc ran inline");
    let f_thread = f_thread.expect("AfterFunc not called after context is canceled");
    assert_ne!(
        f_thread, canceler_thread,
        "AfterFunc ran on the canceling thread"
    );
    canceler.join().unwrap();
    stop.stop(); // defer stop()
}

// ---------------------------------------------------------------------------
// afterfunc_test.go (adapted: see the module docs)
// ---------------------------------------------------------------------------

/// Port of Go's TestCustomContextAfterFuncCancel (afterfunc_test.go).
///
/// Adapted: `ctx0` is a built-in cancelable context (no custom `Context`s in Rust).
#[test]
fn test_custom_context_after_func_cancel() {
    let (ctx0, ctx0_cancel) = Context::background().with_cancel();
    let (ctx1, _cancel) = ctx0.with_cancel();
    ctx0_cancel.cancel(); // ctx0.cancel(context.Canceled)
    assert_eq!(
        ctx1.wait_done_timeout(QUIESCENT),
        Some(Error::Canceled),
        "<-ctx1.Done()"
    );
}

/// Port of Go's TestCustomContextAfterFuncTimeout (afterfunc_test.go).
///
/// Adapted: `ctx0` is a built-in cancelable context.
#[test]
fn test_custom_context_after_func_timeout() {
    let (ctx0, ctx0_cancel) = Context::background().with_cancel();
    let (ctx1, _cancel) = ctx0.with_timeout(VERY_LONG_DURATION);
    ctx0_cancel.cancel();
    assert_eq!(
        ctx1.wait_done_timeout(QUIESCENT),
        Some(Error::Canceled),
        "<-ctx1.Done()"
    );
}

/// Port of Go's TestCustomContextAfterFuncAfterFunc (afterfunc_test.go).
///
/// Adapted: `ctx0` is a built-in cancelable context.
#[test]
fn test_custom_context_after_func_after_func() {
    let (ctx0, ctx0_cancel) = Context::background().with_cancel();
    let (donec_tx, donec) = mpsc::channel();
    let stop = ctx0.after_func(move || {
        donec_tx.send(()).unwrap();
    });
    ctx0_cancel.cancel();
    assert!(donec.recv_timeout(QUIESCENT).is_ok(), "<-donec");
    stop.stop(); // defer stop()
}

/// Port of Go's TestCustomContextAfterFuncUnregisterCancel (afterfunc_test.go).
///
/// Adapted: `len(ctx0.afterFuncs)` is `ctx0.child_count()`; the children are
/// kept alive so that only the cancel calls can unregister them.
#[test]
fn test_custom_context_after_func_unregister_cancel() {
    let (ctx0, _ctx0_cancel) = Context::background().with_cancel();
    let (_c1, cancel1) = ctx0.with_cancel();
    let (_c2, cancel2) = ctx0.with_cancel();
    assert_eq!(
        ctx0.child_count(),
        2,
        "after WithCancel(ctx0): ctx0 has {} children, want 2",
        ctx0.child_count()
    );
    cancel1.cancel();
    cancel2.cancel();
    assert_eq!(
        ctx0.child_count(),
        0,
        "after canceling WithCancel(ctx0): ctx0 has {} children, want 0",
        ctx0.child_count()
    );
}

/// Port of Go's TestCustomContextAfterFuncUnregisterTimeout (afterfunc_test.go).
///
/// Adapted: `len(ctx0.afterFuncs)` is `ctx0.child_count()`.
#[test]
fn test_custom_context_after_func_unregister_timeout() {
    let (ctx0, _ctx0_cancel) = Context::background().with_cancel();
    let (_c, cancel) = ctx0.with_timeout(VERY_LONG_DURATION);
    assert_eq!(
        ctx0.child_count(),
        1,
        "after WithTimeout(ctx0, d): ctx0 has {} children, want 1",
        ctx0.child_count()
    );
    cancel.cancel();
    assert_eq!(
        ctx0.child_count(),
        0,
        "after canceling WithTimeout(ctx0, d): ctx0 has {} children, want 0",
        ctx0.child_count()
    );
}

/// Port of Go's TestCustomContextAfterFuncUnregisterAfterFunc (afterfunc_test.go).
///
/// Adapted: `len(ctx0.afterFuncs)` is `ctx0.child_count()`.
#[test]
fn test_custom_context_after_func_unregister_after_func() {
    let (ctx0, _ctx0_cancel) = Context::background().with_cancel();
    let stop = ctx0.after_func(|| {});
    assert_eq!(
        ctx0.child_count(),
        1,
        "after AfterFunc(ctx0, f): ctx0 has {} children, want 1",
        ctx0.child_count()
    );
    stop.stop();
    assert_eq!(
        ctx0.child_count(),
        0,
        "after stopping AfterFunc(ctx0, f): ctx0 has {} children, want 0",
        ctx0.child_count()
    );
}

// ---------------------------------------------------------------------------
// example_test.go: ExampleAfterFunc_* (each `// Output:` becomes assertions)
// ---------------------------------------------------------------------------

/// Port of Go's ExampleAfterFunc_cond (example_test.go): AfterFunc stops a
/// wait on a condition variable when the context is canceled.
///
/// Adapted: `sync.Cond` is `std::sync::Condvar` with its `Mutex`; the four
/// printed lines are collected and compared.
#[test]
fn example_after_func_cond() {
    // Go's waitOnCond is called with cond.L held; here the caller passes the
    // held guard in, and it is released when waitOnCond returns.
    fn wait_on_cond(
        ctx: &Context,
        cond: &Arc<(Mutex<()>, Condvar)>,
        mut guard: MutexGuard<'_, ()>,
        condition_met: impl Fn() -> bool,
    ) -> Result<(), Error> {
        let f_cond = Arc::clone(cond);
        let stopf = ctx.after_func(move || {
            // We need to acquire the lock here to be sure that the broadcast
            // below won't occur before the call to wait, which would result
            // in a missed signal (and deadlock).
            let _guard = f_cond.0.lock().unwrap();
            // If multiple threads are waiting on cond simultaneously, we need
            // to make sure we wake up exactly this one. That means that we
            // need to broadcast to all of them, which will wake them all up.
            f_cond.1.notify_all();
        });

        // Since the wakeups are using broadcast instead of signal, this wait
        // may unblock due to some other thread's context being canceled, so
        // to be sure that ctx is actually canceled we need to check it in a
        // loop.
        let result = loop {
            if condition_met() {
                break Ok(());
            }
            guard = cond.1.wait(guard).unwrap();
            if let Some(err) = ctx.err() {
                break Err(err);
            }
        };
        stopf.stop(); // defer stopf()
        drop(guard);
        result
    }

    let cond = Arc::new((Mutex::new(()), Condvar::new()));
    let output = Mutex::new(Vec::new());
    thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(1));
                let guard = cond.0.lock().unwrap();
                let err = wait_on_cond(&ctx, &cond, guard, || false);
                output
                    .lock()
                    .unwrap()
                    .push(err.map_or_else(|e| e.to_string(), |()| "<nil>".to_string()));
            });
        }
    });
    assert_eq!(
        output.into_inner().unwrap(),
        vec!["context deadline exceeded"; 4]
    );
}

/// Port of Go's ExampleAfterFunc_connection (example_test.go): AfterFunc
/// interrupts a blocking read from a TCP connection when the context ends.
///
/// Adapted: std has no `SetReadDeadline` that interrupts a read already in
/// progress; `f` shuts the read half down through a cloned handle instead,
/// which wakes the blocked read on Linux.
#[cfg(target_os = "linux")]
#[test]
fn example_after_func_connection() {
    use std::io::Read;
    use std::net::{Shutdown, TcpListener, TcpStream};

    fn read_from_conn(ctx: &Context, conn: &mut TcpStream, b: &mut [u8]) -> std::io::Result<usize> {
        let (stopc_tx, stopc) = mpsc::channel();
        let interrupter = conn.try_clone()?;
        let stop = ctx.after_func(move || {
            let _ = interrupter.shutdown(Shutdown::Read);
            let _ = stopc_tx.send(());
        });
        let result = conn.read(b);
        if !stop.stop() {
            // The AfterFunc was started. Wait for it to complete.
            stopc
                .recv_timeout(QUIESCENT)
                .expect("AfterFunc started but never finished");
            let err = ctx.err().expect("AfterFunc ran, so the context is done");
            return Err(std::io::Error::other(err));
        }
        result
    }

    let listener = TcpListener::bind("localhost:0").expect("listen");
    let mut conn = TcpStream::connect(listener.local_addr().unwrap()).expect("dial");
    let (_server_side, _) = listener.accept().expect("accept");

    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(1));

    let mut b = [0u8; 1024];
    let err = read_from_conn(&ctx, &mut conn, &mut b).expect_err("read should be interrupted");
    assert_eq!(err.to_string(), "context deadline exceeded");
}

/// Port of Go's ExampleAfterFunc_merge (example_test.go): AfterFunc combines
/// the cancellation signals of two contexts.
///
/// Adapted: Go's `errors.New("ctx2 canceled")` is `Cause::msg`; the merged
/// guard is shared between `f` and the returned cancel function with an `Arc`.
#[test]
fn example_after_func_merge() {
    // merge_cancel returns a context that contains the values of ctx, and
    // which is canceled when either ctx or cancel_ctx is canceled.
    fn merge_cancel(ctx: &Context, cancel_ctx: &Context) -> (Context, impl FnOnce()) {
        let (ctx, cancel) = ctx.with_cancel();
        let cancel = Arc::new(cancel);
        let f_cancel = Arc::clone(&cancel);
        let f_cancel_ctx = cancel_ctx.clone();
        let stop = cancel_ctx.after_func(move || {
            let cause = f_cancel_ctx.cause().expect("cancel_ctx is done");
            f_cancel.cancel_with_cause(cause);
        });
        (ctx, move || {
            stop.stop();
            cancel.cancel_with_cause(Error::Canceled);
        })
    }

    let (ctx1, cancel1) = Context::background().with_cancel();
    let (ctx2, cancel2) = Context::background().with_cancel();

    let (merged_ctx, merged_cancel) = merge_cancel(&ctx1, &ctx2);

    cancel2.cancel_with_cause(Cause::msg("ctx2 canceled"));
    assert!(
        merged_ctx.wait_done_timeout(QUIESCENT).is_some(),
        "<-mergedCtx.Done()"
    );
    let cause = merged_ctx.cause().expect("merged context has a cause");
    assert_eq!(cause.to_string(), "ctx2 canceled");

    merged_cancel(); // defer mergedCancel()
    cancel1.cancel_with_cause(Cause::msg("ctx1 canceled")); // defer cancel1(...)
}

// ---------------------------------------------------------------------------
// Not Go ports: the crate's AfterFunc contract extras (see the module docs)
// ---------------------------------------------------------------------------

/// Not a Go port. Contract: `f` runs exactly once, however often and from
/// wherever the context is canceled.
#[test]
fn after_func_runs_exactly_once() {
    let (parent, cancel_parent) = Context::background().with_cancel();
    let (ctx, cancel) = parent.with_cancel();
    let runs = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel();
    let stop = {
        let runs = Arc::clone(&runs);
        ctx.after_func(move || {
            runs.fetch_add(1, Ordering::SeqCst);
            let _ = tx.send(());
        })
    };
    thread::scope(|s| {
        s.spawn(|| cancel.cancel());
        s.spawn(|| cancel.cancel_with_cause(Cause::msg("second")));
        s.spawn(|| cancel_parent.cancel());
    });
    rx.recv_timeout(QUIESCENT).expect("f never ran");
    thread::sleep(NOT_CALLED_WINDOW);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "f ran more than once");
    assert!(!stop.stop(), "stop() after f ran = true, want false");
}

/// Not a Go port. Contract: `f` never runs inline, neither in `cancel` nor in
/// `after_func` on an already-done context (Go: `go f()` in both cases).
#[test]
fn after_func_never_runs_inline() {
    let me = thread::current().id();

    let (ctx, cancel) = Context::background().with_cancel();
    let (tx, rx) = mpsc::channel();
    let _stop = ctx.after_func(move || tx.send(thread::current().id()).unwrap());
    cancel.cancel();
    let ran_on = rx.recv_timeout(QUIESCENT).expect("f never ran");
    assert_ne!(ran_on, me, "f ran inline in cancel()");

    let (tx, rx) = mpsc::channel();
    let _stop = ctx.after_func(move || tx.send(thread::current().id()).unwrap());
    let ran_on = rx
        .recv_timeout(QUIESCENT)
        .expect("f never ran on a done context");
    assert_ne!(ran_on, me, "f ran inline in after_func() on a done context");
}

/// Not a Go port. Contract: `stop()` returns true iff that call prevented `f`
/// from running, also when it races with the cancel.
#[test]
fn after_func_stop_races_cancel() {
    const ROUNDS: usize = 200;
    let runs = Arc::new(AtomicUsize::new(0));
    let mut stopped = 0;
    for _ in 0..ROUNDS {
        let (ctx, cancel) = Context::background().with_cancel();
        let runs_f = Arc::clone(&runs);
        let stop = ctx.after_func(move || {
            runs_f.fetch_add(1, Ordering::SeqCst);
        });
        let canceler = thread::spawn(move || cancel.cancel());
        if stop.stop() {
            stopped += 1;
        }
        assert!(!stop.stop(), "a second stop() returned true");
        canceler.join().unwrap();
    }
    let want_runs = ROUNDS - stopped;
    let give_up = Instant::now() + QUIESCENT;
    while runs.load(Ordering::SeqCst) < want_runs && Instant::now() < give_up {
        thread::sleep(Duration::from_millis(5));
    }
    thread::sleep(NOT_CALLED_WINDOW);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        want_runs,
        "{stopped} of {ROUNDS} stop() calls returned true, so {want_runs} f calls should have run"
    );
}

/// Not a Go port. Contract: dropping the `AfterFunc` leaves `f` registered,
/// and the registration counts in `child_count()` until it runs or is stopped.
#[test]
fn after_func_registration_outlives_handle_and_counts_as_child() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (tx, rx) = mpsc::channel();
    drop(ctx.after_func(move || tx.send(()).unwrap()));
    let stopped = ctx.after_func(|| panic!("stopped f ran"));
    assert_eq!(ctx.child_count(), 2, "two registered AfterFuncs");
    assert!(stopped.stop());
    assert_eq!(
        ctx.child_count(),
        1,
        "the dropped handle's f is still registered"
    );
    assert_eq!(
        rx.recv_timeout(NOT_CALLED_WINDOW),
        Err(mpsc::RecvTimeoutError::Timeout),
        "f ran before the context ended"
    );
    cancel.cancel();
    rx.recv_timeout(QUIESCENT)
        .expect("f of a dropped AfterFunc never ran");
    assert_eq!(ctx.child_count(), 0);
}

/// Not a Go port. Go semantics: on a context that is never canceled
/// (`Background()`), `f` never runs and `stop()` reports that it prevented it.
#[test]
fn after_func_on_background_never_runs() {
    let (tx, rx) = mpsc::channel::<()>();
    let stop = Context::background().after_func(move || tx.send(()).unwrap());
    // Timeout (f kept) or Disconnected (f dropped unrun) are both fine.
    assert!(
        rx.recv_timeout(NOT_CALLED_WINDOW).is_err(),
        "f ran for a context that is never done"
    );
    assert!(stop.stop(), "stop() = false, want true");
    assert!(!stop.stop(), "second stop() = true, want false");
}
