//! Ports of Go's context tests (Go version go1.27.3, src/context/context_test.go,
//! src/context/x_test.go, src/context/example_test.go), BSD-3-Clause, see
//! THIRD-PARTY-NOTICES.md.
//!
//! The AfterFunc tests of x_test.go and the whole of afterfunc_test.go are in
//! `tests/golang_afterfunc.rs`.
//!
//! Mapping used throughout:
//!
//! | Go                                         | Rust                                                  |
//! | ------------------------------------------ | ----------------------------------------------------- |
//! | `<-ctx.Done()`                             | `ctx.wait_done()` / `wait_done_timeout(d)`, or `block_on(ctx.done())` |
//! | `select { case <-ctx.Done(): ...; default: }` | `ctx.is_done()` + a hand-polled `Done` (counting waker) |
//! | `cancel()` / `cancel(cause)`               | `guard.cancel()` / `guard.cancel_with_cause(cause)`   |
//! | `c, _ := WithX(...)` (cancel never called) | keep the guard (`_guard`) or `guard.detach()`: dropping a `CancelGuard` cancels |
//! | `WithValue(ctx, key, v)`                   | `ctx.with_value(KeyType(v))`: values are keyed by type |
//! | `Cause(ctx)` identity (`got != want`)      | `ctx.cause().downcast_ref::<TestError>() == Some(&TestError(name))` |
//! | `otherContext{c}` (a non-cancelCtx wrapper) | `c.with_value(OtherContext)`: a derived context that only forwards |
//! | `quiescent(t)`                             | [`QUIESCENT`] (10 s: a loaded 2-core machine must pass) |
//! | goroutines                                 | `std::thread`                                         |
//!
//! # Go tests that are not ported, and why
//!
//! context_test.go / x_test.go:
//! - `TestCustomContextGoroutines`, `TestCustomContextPropagation`,
//!   `TestCustomContextCause`: about user-defined `Context` implementations
//!   (`myCtx`, `customDoneContext`, `customCauseContext`); there is no
//!   `Context` trait in Rust. What a Rust user can build instead (a wrapper,
//!   a context bridged with `after_func`) is ported, adapted, in
//!   `tests/golang_more.rs`, with what Rust can observe of the goroutine
//!   count (no derivation starts a thread).
//! - `TestWithValueChecksKey`: Go panics on a nil or non-comparable key. Rust
//!   values are keyed by their type, so both are impossible at compile time.
//! - `TestInvalidDerivedFail`: Go panics on a nil parent; a Rust `Context` can
//!   never be null.
//! - The three `TestCause` rows "parent of custom context ..." use
//!   `newCustomContext` (a user-defined `Context`); the other rows are ported.
//! - The parts of `TestParentFinishesChild` / `TestChildFinishesFirst` that
//!   check unexported linkage (`parentCancelCtx`, the `children` map's exact
//!   members) are reduced to `child_count()`, the public view of that map.
//! - `TestAllocs` here runs the same operations and checks their results;
//!   `tests/golang_more.rs` counts their allocations against Go's own limits
//!   (and `tests/allocs.rs` against the crate's tighter goals).
//!
//! net_test.go:
//! - `TestDeadlineExceededIsNetError`: `net.Error` and `Temporary()` have no
//!   Rust counterpart; its `Timeout()` half is
//!   `test_deadline_exceeded_supports_timeout` (and `io::Error::from` makes
//!   `DeadlineExceeded` an I/O error of kind `TimedOut`, `error.rs`).
//!
//! benchmark_test.go: benchmarks, not tests (`BenchmarkCommonParentCancel`,
//! `BenchmarkWithTimeout`, `BenchmarkCancelTree`, `BenchmarkCheckCanceled`,
//! `BenchmarkContextCancelDone`, `BenchmarkDeepValueNewGoRoutine`,
//! `BenchmarkDeepValueSameGoRoutine`, `BenchmarkErrOK`, `BenchmarkErrCanceled`);
//! they belong in `benches/`.
//!
//! example_test.go: `ExampleWithCancel`, `ExampleWithDeadline`,
//! `ExampleWithTimeout` and `ExampleWithValue` are ported below as tests that
//! check the example's `// Output:`; the `ExampleAfterFunc_*` examples are in
//! `tests/golang_afterfunc.rs`.

mod common;

use std::any::type_name;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::task::{Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cancelctx::{CancelGuard, Cause, Context, Done, Error};
use common::golang::{QUIESCENT, SHORT_DURATION, TestError, VERY_LONG_DURATION, other_context};

// ---------------------------------------------------------------------------
// Shared helpers (Go: constants and helpers at the top of x_test.go)
// ---------------------------------------------------------------------------

/// Go's `"key"` string key, as a newtype key.
#[derive(Debug)]
struct StrKey(&'static str);

/// A waker that counts how often it was woken.
#[derive(Default)]
struct CountingWaker {
    wakes: AtomicUsize,
}

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
    }
}

/// A `Done` future polled by hand, with a counting waker: the Rust view of a
/// Go `select` on `ctx.Done()` with a `default:` branch.
struct PolledDone {
    done: Done,
    waker: Arc<CountingWaker>,
}

impl PolledDone {
    fn new(ctx: &Context) -> PolledDone {
        PolledDone {
            done: ctx.done(),
            waker: Arc::new(CountingWaker::default()),
        }
    }

    fn poll(&mut self) -> Poll<Error> {
        let waker = Waker::from(self.waker.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        Pin::new(&mut self.done).poll(&mut cx)
    }

    fn wakes(&self) -> usize {
        self.waker.wakes.load(Ordering::SeqCst)
    }
}

/// Go: `select { case x := <-ctx.Done(): t.Errorf("... want nothing (it should block)"); default: }`.
#[track_caller]
fn assert_blocks(ctx: &Context, name: &str) {
    assert!(
        !ctx.is_done(),
        "{name}.is_done() == true, want false (it should block)"
    );
    assert_eq!(ctx.err(), None, "{name}.err() want None");
    let mut done = PolledDone::new(ctx);
    assert!(
        done.poll().is_pending(),
        "polling {name}.done() gave Ready, want Pending (it should block)"
    );
}

/// Go: `select { case <-ctx.Done(): default: t.Errorf("<-ctx.Done() blocked, but shouldn't have") }`
/// followed by `if e := ctx.Err(); e != want { ... }`.
#[track_caller]
fn assert_done(ctx: &Context, name: &str, want: Error) {
    assert!(
        ctx.is_done(),
        "{name}.is_done() == false: <-{name}.Done() blocked, but shouldn't have"
    );
    assert_eq!(ctx.err(), Some(want), "{name}.err()");
    let mut done = PolledDone::new(ctx);
    assert_eq!(
        done.poll(),
        Poll::Ready(want),
        "polling {name}.done() once: want Ready({want:?})"
    );
}

/// `futures::executor::block_on(ctx.done())` on a helper thread, so that a
/// context that never ends fails the test after `limit` instead of hanging it.
fn block_on_done_within(ctx: &Context, limit: Duration) -> Option<Error> {
    let done = ctx.done();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(futures::executor::block_on(done));
    });
    rx.recv_timeout(limit).ok()
}

/// A small xorshift generator (Go's tests use math/rand).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn time_seed() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Go's `r.Intn(n)`.
    fn intn(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.intn(i + 1);
            v.swap(i, j);
        }
    }
}

// ---------------------------------------------------------------------------
// context_test.go (the XTest* functions, run from x_test.go's Test* wrappers)
// ---------------------------------------------------------------------------

/// Port of Go's TestParentFinishesChild (context_test.go, XTestParentFinishesChild).
///
/// Adapted: Go inspects the unexported `children` map and `parentCancelCtx`
/// linkage; here the parent's `child_count()` is the public view of that map
/// (the value context is transparent, so the timer child under it is the
/// parent's child, as in Go).
#[test]
fn test_parent_finishes_child() {
    // Context tree:
    // parent -> cancelChild
    // parent -> valueChild -> timerChild
    // parent -> afterChild
    let (parent, cancel) = Context::background().with_cancel();
    let (cancel_child, _stop_cancel_child) = parent.with_cancel();
    let value_child = parent.with_value(StrKey("value"));
    let (timer_child, _stop_timer_child) = value_child.with_timeout(VERY_LONG_DURATION);
    let after_stop = parent.after_func(|| {});

    assert_blocks(&parent, "parent");
    assert_blocks(&cancel_child, "cancelChild");
    assert_blocks(&timer_child, "timerChild");
    assert_blocks(&value_child, "valueChild");

    // The parent's children should contain the three cancelable children.
    assert_eq!(
        parent.child_count(),
        3,
        "bad linkage: parent should have cancelChild, timerChild and an afterFunc as children"
    );

    cancel.cancel();

    assert_eq!(
        parent.child_count(),
        0,
        "parent's cancel didn't clear its children"
    );

    // parent and children should all be finished.
    assert_done(&parent, "parent", Error::Canceled);
    assert_done(&cancel_child, "cancelChild", Error::Canceled);
    assert_done(&value_child, "valueChild", Error::Canceled);
    assert_done(&timer_child, "timerChild", Error::Canceled);

    // WithCancel should return a canceled context on a canceled parent.
    let precanceled_child = parent.with_value(StrKey("value"));
    assert_done(&precanceled_child, "precanceledChild", Error::Canceled);

    // defer afterStop()
    after_stop.stop();
}

/// Port of Go's TestChildFinishesFirst (context_test.go, XTestChildFinishesFirst).
///
/// Adapted: the `parentCancelCtx` linkage check becomes `child_count()` on the
/// cancelable parent (Go only checks `pc.children` when the parent is a
/// `*cancelCtx`, i.e. not for `Background()`).
#[test]
fn test_child_finishes_first() {
    let (cancelable, _stop) = Context::background().with_cancel();
    for (parent, pcok) in [(Context::background(), false), (cancelable.clone(), true)] {
        let (child, cancel) = parent.with_cancel();

        assert_blocks(&parent, "parent");
        assert_blocks(&child, "child");

        if pcok {
            assert_eq!(
                parent.child_count(),
                1,
                "bad linkage: parent should have exactly the child"
            );
        }

        cancel.cancel();

        if pcok {
            assert_eq!(
                parent.child_count(),
                0,
                "child's cancel didn't remove self from the parent's children"
            );
        }

        // child should be finished.
        assert_done(&child, "child", Error::Canceled);

        // parent should not be finished.
        assert_blocks(&parent, "parent");
    }
}

/// Port of Go's TestCancelRemoves (context_test.go, XTestCancelRemoves).
///
/// Adapted: `len(ctx.(*cancelCtx).children)` is `ctx.child_count()`. Go drops
/// the children's `Context` values (`_, cancel := WithCancel(ctx)`); here they
/// are kept alive so that only the cancel/stop call can unregister them.
#[test]
fn test_cancel_removes() {
    #[track_caller]
    fn check_children(when: &str, ctx: &Context, want: usize) {
        let got = ctx.child_count();
        assert_eq!(got, want, "{when}: context has {got} children, want {want}");
    }

    let (ctx, _ctx_guard) = Context::background().with_cancel();
    check_children("after creation", &ctx, 0);
    let (_child, cancel) = ctx.with_cancel();
    check_children("with WithCancel child ", &ctx, 1);
    cancel.cancel();
    check_children("after canceling WithCancel child", &ctx, 0);

    let (ctx, _ctx_guard) = Context::background().with_cancel();
    check_children("after creation", &ctx, 0);
    let (_child, cancel) = ctx.with_timeout(Duration::from_secs(60 * 60));
    check_children("with WithTimeout child ", &ctx, 1);
    cancel.cancel();
    check_children("after canceling WithTimeout child", &ctx, 0);

    let (ctx, _ctx_guard) = Context::background().with_cancel();
    check_children("after creation", &ctx, 0);
    let stop = ctx.after_func(|| {});
    check_children("with AfterFunc child ", &ctx, 1);
    stop.stop();
    check_children("after stopping AfterFunc child ", &ctx, 0);
}

// ---------------------------------------------------------------------------
// x_test.go
// ---------------------------------------------------------------------------

/// Port of Go's TestBackground (x_test.go).
#[test]
fn test_background() {
    let c = Context::background();
    assert_blocks(&c, "c");
    assert_eq!(c.to_string(), "context.Background", "Background().String()");
}

/// Port of Go's TestTODO (x_test.go).
#[test]
fn test_todo() {
    let c = Context::todo();
    assert_blocks(&c, "c");
    assert_eq!(c.to_string(), "context.TODO", "TODO().String()");
}

/// Port of Go's TestWithCancel (x_test.go).
///
/// Adapted: `otherContext{c1}` is `c1.with_value(OtherContext)`. Each context's
/// `Done` is polled once before `cancel()` (registering a counting waker) and
/// must have been woken and be ready once `cancel()` returns ("Should
/// propagate synchronously").
#[test]
fn test_with_cancel() {
    let (c1, cancel) = Context::background().with_cancel();

    assert_eq!(
        c1.to_string(),
        "context.Background.WithCancel",
        "c1.String()"
    );

    let o = other_context(&c1);
    let (c2, _c2_guard) = o.with_cancel();
    let contexts = [c1.clone(), o, c2];

    let mut dones = Vec::new();
    for (i, c) in contexts.iter().enumerate() {
        assert_eq!(c.err(), None, "c[{i}].err() want None");
        assert_blocks(c, &format!("c[{i}]"));
        let mut done = PolledDone::new(c);
        assert!(done.poll().is_pending(), "c[{i}].done() should block");
        dones.push(done);
    }

    cancel.cancel(); // Should propagate synchronously.
    for (i, c) in contexts.iter().enumerate() {
        assert_done(c, &format!("c[{i}]"), Error::Canceled);
        assert!(
            dones[i].wakes() >= 1,
            "cancel() returned without waking the task waiting on c[{i}].done()"
        );
        assert_eq!(
            dones[i].poll(),
            Poll::Ready(Error::Canceled),
            "c[{i}].done() after cancel"
        );
    }
}

/// Go's `testDeadline`: the context must end with DeadlineExceeded within
/// `quiescent`. Added: it must not end before `not_before`.
#[track_caller]
fn test_deadline_helper(c: &Context, name: &str, not_before: Instant) {
    match c.wait_done_timeout(QUIESCENT) {
        None => panic!("{name}: context not timed out after {QUIESCENT:?}"),
        Some(e) => assert_eq!(e, Error::DeadlineExceeded, "{name}: wait_done_timeout()"),
    }
    assert!(
        Instant::now() >= not_before,
        "{name}: context ended before its deadline"
    );
    assert_eq!(c.err(), Some(Error::DeadlineExceeded), "{name}: c.err()");
}

/// `testDeadline` waiting with `futures::executor::block_on(c.done())`.
#[track_caller]
fn test_deadline_async(c: &Context, name: &str, not_before: Instant) {
    match block_on_done_within(c, QUIESCENT) {
        None => panic!("{name}: block_on(c.done()) not ready after {QUIESCENT:?}"),
        Some(e) => assert_eq!(e, Error::DeadlineExceeded, "{name}: block_on(c.done())"),
    }
    assert!(
        Instant::now() >= not_before,
        "{name}: context ended before its deadline"
    );
    assert_eq!(c.err(), Some(Error::DeadlineExceeded), "{name}: c.err()");
}

/// Port of Go's TestDeadline (x_test.go).
///
/// Adapted: Go discards the cancel functions (`c, _ := WithDeadline(...)`);
/// dropping a `CancelGuard` would cancel, so the guards are `detach()`ed.
/// `otherContext` is a value wrapper. Some cases wait with
/// `block_on(c.done())` instead of the blocking wait. Added: the context must
/// not end before its deadline, and `deadline()` of a child whose own deadline
/// is later than its parent's is the parent's (Go returns `WithCancel(parent)`
/// in that case).
#[test]
fn test_deadline() {
    let d = Instant::now() + SHORT_DURATION;
    let (c, guard) = Context::background().with_deadline(d);
    guard.detach();
    let got = c.to_string();
    assert!(
        got.starts_with("context.Background.WithDeadline("),
        "c.String() = {got:?} want prefix \"context.Background.WithDeadline(\""
    );
    assert_eq!(c.deadline(), Some(d), "c.deadline()");
    test_deadline_helper(&c, "WithDeadline", d);

    let d = Instant::now() + SHORT_DURATION;
    let (c, guard) = Context::background().with_deadline(d);
    guard.detach();
    let o = other_context(&c);
    test_deadline_async(&o, "WithDeadline+otherContext", d);

    let d = Instant::now() + SHORT_DURATION;
    let (c, guard) = Context::background().with_deadline(d);
    guard.detach();
    let o = other_context(&c);
    let (c, guard) = o.with_deadline(Instant::now() + VERY_LONG_DURATION);
    guard.detach();
    assert_eq!(
        c.deadline(),
        Some(d),
        "WithDeadline+otherContext+WithDeadline: deadline() should be the parent's earlier one"
    );
    test_deadline_helper(&c, "WithDeadline+otherContext+WithDeadline", d);

    let d = Instant::now() - SHORT_DURATION;
    let (c, guard) = Context::background().with_deadline(d);
    guard.detach();
    test_deadline_helper(&c, "WithDeadline+inthepast", d);

    let d = Instant::now();
    let (c, guard) = Context::background().with_deadline(d);
    guard.detach();
    test_deadline_async(&c, "WithDeadline+now", d);
}

/// Port of Go's TestTimeout (x_test.go).
///
/// Adapted as `test_deadline` (detached guards, value wrapper for
/// `otherContext`, one case awaited with `block_on`, not-early check).
#[test]
fn test_timeout() {
    let start = Instant::now();
    let (c, guard) = Context::background().with_timeout(SHORT_DURATION);
    guard.detach();
    let got = c.to_string();
    assert!(
        got.starts_with("context.Background.WithDeadline("),
        "c.String() = {got:?} want prefix \"context.Background.WithDeadline(\""
    );
    test_deadline_helper(&c, "WithTimeout", start + SHORT_DURATION);

    let start = Instant::now();
    let (c, guard) = Context::background().with_timeout(SHORT_DURATION);
    guard.detach();
    let o = other_context(&c);
    test_deadline_async(&o, "WithTimeout+otherContext", start + SHORT_DURATION);

    let start = Instant::now();
    let (c, guard) = Context::background().with_timeout(SHORT_DURATION);
    guard.detach();
    let o = other_context(&c);
    let (c, guard) = o.with_timeout(VERY_LONG_DURATION);
    guard.detach();
    test_deadline_helper(
        &c,
        "WithTimeout+otherContext+WithTimeout",
        start + SHORT_DURATION,
    );
}

/// Port of Go's TestCanceledTimeout (x_test.go).
///
/// Adapted: `otherContext` is a value wrapper; the outer guard is kept alive
/// (Go never calls that cancel).
#[test]
fn test_canceled_timeout() {
    let (c, _outer_guard) = Context::background().with_timeout(Duration::from_secs(1));
    let o = other_context(&c);
    let (c, cancel) = o.with_timeout(VERY_LONG_DURATION);
    cancel.cancel(); // Should propagate synchronously.
    assert_done(&c, "c", Error::Canceled);
}

// Go: `type key1 int; type key2 int; k1 = key1(1); k2 = key2(1); k3 = key2(3)`.
// Rust values are keyed by type, so the three keys are three types, each
// holding the (possibly nil) string value.
#[derive(Debug)]
struct Key1(Option<&'static str>);
#[derive(Debug)]
struct Key2(Option<&'static str>);
#[derive(Debug)]
struct Key3(Option<&'static str>);

/// Checks `Display` of a chain of value contexts on Background: one
/// `.WithValue(` segment per entry of `types`, naming that key type
/// (`std::any::type_name`, e.g. `golang::Key1`).
#[track_caller]
fn check_value_string(c: &Context, types: &[&str]) {
    let s = c.to_string();
    assert!(
        s.starts_with("context.Background.WithValue("),
        "c.String() = {s:?} want prefix \"context.Background.WithValue(\""
    );
    let segments: Vec<&str> = s.split(".WithValue(").skip(1).collect();
    assert_eq!(
        segments.len(),
        types.len(),
        "c.String() = {s:?} want {} WithValue segments",
        types.len()
    );
    for (segment, ty) in segments.iter().zip(types) {
        assert!(
            segment.contains(ty),
            "c.String() = {s:?}: segment {segment:?} should name the key type {ty}"
        );
    }
}

/// Port of Go's TestValues (x_test.go).
///
/// Adapted: Go's keys `k1 = key1(1)`, `k2 = key2(1)`, `k3 = key2(3)` become the
/// types `Key1`, `Key2`, `Key3`, each holding the value; Go's nil value
/// (`WithValue(c3, k1, nil)`) is `Key1(None)`, which shadows the outer `Key1`.
/// The exact Go strings (`context_test.key1, c1k1`) become: each `WithValue(`
/// segment names the Rust key type (`std::any::type_name`); the value's
/// rendering is not checked. `otherContext` is a value wrapper.
#[test]
fn test_values() {
    #[track_caller]
    fn check(c: &Context, nm: &str, v1: &str, v2: &str, v3: &str) {
        let got1 = c.value::<Key1>().and_then(|k| k.0).unwrap_or("");
        assert_eq!(got1, v1, "{nm}.value::<Key1>()");
        let got2 = c.value::<Key2>().and_then(|k| k.0).unwrap_or("");
        assert_eq!(got2, v2, "{nm}.value::<Key2>()");
        let got3 = c.value::<Key3>().and_then(|k| k.0).unwrap_or("");
        assert_eq!(got3, v3, "{nm}.value::<Key3>()");
    }

    let c0 = Context::background();
    check(&c0, "c0", "", "", "");

    let c1 = Context::background().with_value(Key1(Some("c1k1")));
    check(&c1, "c1", "c1k1", "", "");

    check_value_string(&c1, &[type_name::<Key1>()]);

    let c2 = c1.with_value(Key2(Some("c2k2")));
    check(&c2, "c2", "c1k1", "c2k2", "");

    check_value_string(&c2, &[type_name::<Key1>(), type_name::<Key2>()]);

    let c3 = c2.with_value(Key3(Some("c3k3")));
    check(&c3, "c2", "c1k1", "c2k2", "c3k3");

    let c4 = c3.with_value(Key1(None));
    check(&c4, "c4", "", "c2k2", "c3k3");

    check_value_string(
        &c4,
        &[
            type_name::<Key1>(),
            type_name::<Key2>(),
            type_name::<Key3>(),
            type_name::<Key1>(),
        ],
    );

    let o0 = other_context(&Context::background());
    check(&o0, "o0", "", "", "");

    let o1 = other_context(&Context::background().with_value(Key1(Some("c1k1"))));
    check(&o1, "o1", "c1k1", "", "");

    let o2 = o1.with_value(Key2(Some("o2k2")));
    check(&o2, "o2", "c1k1", "o2k2", "");

    let o3 = other_context(&c4);
    check(&o3, "o3", "", "c2k2", "c3k3");

    let o4 = o3.with_value(Key3(None));
    check(&o4, "o4", "", "c2k2", "");
}

/// Port of Go's TestAllocs (x_test.go).
///
/// Adapted: Go counts allocations per run against Go-specific limits
/// (`testing.AllocsPerRun`). Here each of the same operations runs 100 times
/// and its result is checked; allocation counts are the benchmarks' business.
#[test]
fn test_allocs() {
    type Body<'a> = Box<dyn Fn() + 'a>;
    let bg = Context::background();
    let tests: Vec<(&str, Body<'_>)> = vec![
        (
            "Background()",
            Box::new(|| {
                let c = Context::background();
                assert!(!c.is_done());
            }),
        ),
        (
            "WithValue(bg, k1, nil)",
            Box::new(|| {
                let c = bg.with_value(Key1(None));
                assert!(c.value::<Key1>().is_some());
            }),
        ),
        (
            "WithTimeout(bg, 1*time.Nanosecond)",
            Box::new(|| {
                let (c, _cancel) = bg.with_timeout(Duration::from_nanos(1));
                assert_eq!(
                    c.wait_done_timeout(QUIESCENT),
                    Some(Error::DeadlineExceeded)
                );
            }),
        ),
        (
            "WithCancel(bg)",
            Box::new(|| {
                let (c, cancel) = bg.with_cancel();
                cancel.cancel();
                assert_eq!(c.wait_done_timeout(QUIESCENT), Some(Error::Canceled));
            }),
        ),
        (
            "WithTimeout(bg, 5*time.Millisecond)",
            Box::new(|| {
                let (c, cancel) = bg.with_timeout(Duration::from_millis(5));
                cancel.cancel();
                assert_eq!(c.wait_done_timeout(QUIESCENT), Some(Error::Canceled));
            }),
        ),
    ];
    for (desc, f) in &tests {
        for _ in 0..100 {
            f();
        }
        eprintln!("{desc}: ok");
    }
}

/// Port of Go's TestSimultaneousCancels (x_test.go).
///
/// Adapted: Go's map gives a random order; here an explicit shuffle does.
/// Each cancel runs on its own thread, as Go's on its own goroutine. Waiting
/// uses `wait_done_deadline` against the common "stuck" deadline.
#[test]
fn test_simultaneous_cancels() {
    let seed = Rng::time_seed();
    let mut rng = Rng::new(seed);

    let (root, cancel) = Context::background().with_cancel();
    let mut contexts = vec![root];
    let mut guards = vec![cancel];
    let mut q = VecDeque::from([0usize]);
    // Create a tree of contexts.
    while let Some(parent) = q.pop_front() {
        if contexts.len() >= 100 {
            break;
        }
        for _ in 0..4 {
            let (ctx, cancel) = contexts[parent].with_cancel();
            contexts.push(ctx);
            guards.push(cancel);
            q.push_back(contexts.len() - 1);
        }
    }
    assert_eq!(contexts.len(), 101);

    // Start all the cancels in a random order.
    rng.shuffle(&mut guards);
    let (done_tx, done_rx) = mpsc::channel();
    let mut handles = Vec::new();
    for cancel in guards {
        let done_tx = done_tx.clone();
        handles.push(thread::spawn(move || {
            cancel.cancel();
            let _ = done_tx.send(());
        }));
    }
    drop(done_tx);

    let stuck = Instant::now() + QUIESCENT;

    // Wait on all the contexts in a random order.
    rng.shuffle(&mut contexts);
    for (i, ctx) in contexts.iter().enumerate() {
        assert!(
            ctx.wait_done_deadline(stuck).is_some(),
            "seed={seed}: timed out after {QUIESCENT:?} waiting for ctx[{i}].done()"
        );
    }
    // Wait for all the cancel functions to return.
    for i in 0..handles.len() {
        let left = stuck.saturating_duration_since(Instant::now());
        assert!(
            done_rx.recv_timeout(left).is_ok(),
            "seed={seed}: timed out after {QUIESCENT:?} waiting for cancel functions ({i} returned)"
        );
    }
    for h in handles {
        h.join().expect("cancel thread panicked");
    }
    for ctx in &contexts {
        assert_eq!(ctx.err(), Some(Error::Canceled));
    }
}

/// Port of Go's TestInterlockedCancels (x_test.go).
#[test]
fn test_interlocked_cancels() {
    let (parent, cancel_parent) = Context::background().with_cancel();
    let (child, cancel_child) = parent.with_cancel();
    {
        let parent = parent.clone();
        thread::spawn(move || {
            parent.wait_done();
            cancel_child.cancel();
        });
    }
    cancel_parent.cancel();
    assert!(
        child.wait_done_timeout(QUIESCENT).is_some(),
        "timed out after {QUIESCENT:?} waiting for child.done()"
    );
}

/// Go's `type value int; v := new(value); WithValue(ctx, v, v)` uses a fresh
/// pointer as the key of each layer. Rust values are keyed by type, so the
/// layers draw from eight distinct key types, each holding a unique id; a
/// later value of the same type shadows an earlier one.
#[derive(Debug)]
struct LayerValue<const N: usize>(usize);

type AddValueFn = fn(&Context, usize) -> Context;
type GetValueFn = fn(&Context) -> Option<usize>;

fn add_layer_value<const N: usize>(c: &Context, id: usize) -> Context {
    c.with_value(LayerValue::<N>(id))
}

fn get_layer_value<const N: usize>(c: &Context) -> Option<usize> {
    c.value::<LayerValue<N>>().map(|v| v.0)
}

fn layer_keys() -> [(AddValueFn, GetValueFn); 8] {
    [
        (add_layer_value::<0>, get_layer_value::<0>),
        (add_layer_value::<1>, get_layer_value::<1>),
        (add_layer_value::<2>, get_layer_value::<2>),
        (add_layer_value::<3>, get_layer_value::<3>),
        (add_layer_value::<4>, get_layer_value::<4>),
        (add_layer_value::<5>, get_layer_value::<5>),
        (add_layer_value::<6>, get_layer_value::<6>),
        (add_layer_value::<7>, get_layer_value::<7>),
    ]
}

/// Go's `testLayers`.
fn test_layers(seed: u64, test_timeout: bool) {
    let mut r = Rng::new(seed);
    let prefix = format!("seed={seed}");
    const MIN_LAYERS: usize = 30;

    let keys = layer_keys();
    // For each key type, the id of the nearest (latest) value, if any.
    let mut vals: [Option<usize>; 8] = [None; 8];
    let mut num_vals = 0usize;
    let mut cancels: Vec<CancelGuard> = Vec::new();
    let mut num_timers = 0usize;
    let mut ctx = Context::background();

    let mut i = 0;
    while i < MIN_LAYERS || num_timers == 0 || cancels.is_empty() || num_vals == 0 {
        match r.intn(3) {
            0 => {
                let k = r.intn(keys.len());
                ctx = (keys[k].0)(&ctx, num_vals);
                vals[k] = Some(num_vals);
                num_vals += 1;
            }
            1 => {
                let (c, cancel) = ctx.with_cancel();
                ctx = c;
                cancels.push(cancel);
            }
            _ => {
                let d = if test_timeout {
                    SHORT_DURATION
                } else {
                    VERY_LONG_DURATION
                };
                let (c, cancel) = ctx.with_timeout(d);
                ctx = c;
                cancels.push(cancel);
                num_timers += 1;
            }
        }
        i += 1;
    }

    let check_values = |when: &str| {
        for (k, want) in vals.iter().enumerate() {
            let got = (keys[k].1)(&ctx);
            assert_eq!(
                got, *want,
                "{prefix}{when}: ctx.value::<LayerValue<{k}>>() = {got:?} want {want:?}"
            );
        }
    };

    if !test_timeout {
        assert!(!ctx.is_done(), "{prefix}ctx should not be canceled yet");
        assert_blocks(&ctx, &format!("{prefix} ctx"));
    }
    let s = ctx.to_string();
    assert!(
        s.starts_with("context.Background."),
        "ctx.String() = {s:?} want prefix \"context.Background.\""
    );
    println!("{s}");
    check_values("before cancel");
    if test_timeout {
        assert!(
            ctx.wait_done_timeout(QUIESCENT).is_some(),
            "{prefix}ctx should have timed out after {QUIESCENT:?}"
        );
        // Added: nothing was canceled, so the end must be a deadline.
        assert_eq!(
            ctx.err(),
            Some(Error::DeadlineExceeded),
            "{prefix}ctx.err()"
        );
        check_values("after timeout");
    } else {
        let cancel = &cancels[r.intn(cancels.len())];
        cancel.cancel();
        assert!(ctx.is_done(), "{prefix}ctx should be canceled");
        assert_done(&ctx, &format!("{prefix} ctx"), Error::Canceled);
        check_values("after cancel");
    }
}

/// Port of Go's TestLayersCancel (x_test.go).
///
/// Adapted: value layers are keyed by type (see `LayerValue`).
#[test]
fn test_layers_cancel() {
    test_layers(Rng::time_seed(), false);
}

/// Port of Go's TestLayersTimeout (x_test.go).
///
/// Adapted: value layers are keyed by type (see `LayerValue`).
#[test]
fn test_layers_timeout() {
    test_layers(Rng::time_seed(), true);
}

/// Port of Go's TestWithCancelCanceledParent (x_test.go).
///
/// Adapted: `WithCancelCause` is `with_cancel` (every guard can cancel with a
/// cause); Go's `fmt.Errorf("Because!")` is compared by identity, here by
/// downcasting to the comparable `TestError`.
#[test]
fn test_with_cancel_canceled_parent() {
    let (parent, pcancel) = Context::background().with_cancel();
    let cause = TestError("Because!");
    pcancel.cancel_with_cause(Cause::new(cause));

    let (c, _c_guard) = parent.with_cancel();
    assert!(c.is_done(), "child not done immediately upon construction");
    let mut done = PolledDone::new(&c);
    assert_eq!(
        done.poll(),
        Poll::Ready(Error::Canceled),
        "child's done() not ready immediately upon construction"
    );
    assert_eq!(c.err(), Some(Error::Canceled), "child not canceled");
    let got = c.cause().expect("child has no cause");
    assert_eq!(
        got.downcast_ref::<TestError>(),
        Some(&cause),
        "child has wrong cause; got = {got}, want = {cause}"
    );
}

/// Port of Go's TestWithCancelSimultaneouslyCanceledParent (x_test.go).
///
/// Adapted: the child's guard is kept alive (Go discards, never calls, that
/// cancel; dropping the guard would cancel the child with its own cause).
#[test]
fn test_with_cancel_simultaneously_canceled_parent() {
    // Cancel the parent goroutine concurrently with creating a child.
    for i in 0..100 {
        let (parent, pcancel) = Context::background().with_cancel();
        let cause = TestError("Because!");
        let canceler = thread::spawn(move || pcancel.cancel_with_cause(cause));

        let (c, _c_guard) = parent.with_cancel();
        assert_eq!(
            c.wait_done_timeout(QUIESCENT),
            Some(Error::Canceled),
            "iteration {i}: <-c.Done()"
        );
        assert_eq!(
            c.err(),
            Some(Error::Canceled),
            "iteration {i}: child not canceled"
        );
        let got = c.cause().expect("child has no cause");
        assert_eq!(
            got.downcast_ref::<TestError>(),
            Some(&cause),
            "iteration {i}: child has wrong cause; got = {got}, want = {cause}"
        );
        canceler.join().unwrap();
    }
}

/// Port of Go's TestDeadlineExceededSupportsTimeout (x_test.go).
///
/// Added: `Canceled` is not a timeout (Go's `Canceled` has no `Timeout()`).
#[test]
fn test_deadline_exceeded_supports_timeout() {
    assert!(
        Error::DeadlineExceeded.is_timeout(),
        "wrong value for timeout"
    );
    assert!(!Error::Canceled.is_timeout(), "Canceled is not a timeout");
}

/// What `ctx.cause()` should hold in a `test_cause` row.
#[derive(Debug, Clone, Copy)]
enum WantCause {
    /// `Cause(ctx) == nil`.
    Nil,
    /// `Cause(ctx) == Canceled` / `DeadlineExceeded`: the `Error` itself.
    Err(Error),
    /// One of the test's own errors.
    Custom(TestError),
}

/// Port of Go's TestCause (x_test.go).
///
/// Adapted: `WithCancelCause` is `with_cancel`; `cancel(err)` is
/// `cancel_with_cause(err)`; Go's `cancel(nil)` ("WithCancelCause nil") is
/// `cancel_with_cause(Error::Canceled)`, which Go's nil cause stands for.
/// Cancel functions Go discards (`ctx, _ = WithTimeoutCause(...)`) are kept
/// alive until the row is checked. The three "parent of custom context" rows
/// need a user-defined `Context` and are not ported.
#[test]
fn test_cause() {
    let forever = Duration::from_secs(1_000_000);
    let parent_cause = TestError("parentCause");
    let child_cause = TestError("childCause");
    let too_slow = TestError("tooSlow");
    let finished_early = TestError("finishedEarly");

    type MakeCtx = Box<dyn Fn() -> (Context, Vec<CancelGuard>)>;
    let tests: Vec<(&str, MakeCtx, Option<Error>, WantCause)> = vec![
        (
            "Background",
            Box::new(|| (Context::background(), vec![])),
            None,
            WantCause::Nil,
        ),
        (
            "TODO",
            Box::new(|| (Context::todo(), vec![])),
            None,
            WantCause::Nil,
        ),
        (
            "WithCancel",
            Box::new(|| {
                let (ctx, cancel) = Context::background().with_cancel();
                cancel.cancel();
                (ctx, vec![cancel])
            }),
            Some(Error::Canceled),
            WantCause::Err(Error::Canceled),
        ),
        (
            "WithCancelCause",
            Box::new(move || {
                let (ctx, cancel) = Context::background().with_cancel();
                cancel.cancel_with_cause(parent_cause);
                (ctx, vec![cancel])
            }),
            Some(Error::Canceled),
            WantCause::Custom(parent_cause),
        ),
        (
            "WithCancelCause nil",
            Box::new(|| {
                let (ctx, cancel) = Context::background().with_cancel();
                cancel.cancel_with_cause(Error::Canceled);
                (ctx, vec![cancel])
            }),
            Some(Error::Canceled),
            WantCause::Err(Error::Canceled),
        ),
        (
            "WithCancelCause: parent cause before child",
            Box::new(move || {
                let (ctx, cancel_parent) = Context::background().with_cancel();
                let (ctx, cancel_child) = ctx.with_cancel();
                cancel_parent.cancel_with_cause(parent_cause);
                cancel_child.cancel_with_cause(child_cause);
                (ctx, vec![cancel_parent, cancel_child])
            }),
            Some(Error::Canceled),
            WantCause::Custom(parent_cause),
        ),
        (
            "WithCancelCause: parent cause after child",
            Box::new(move || {
                let (ctx, cancel_parent) = Context::background().with_cancel();
                let (ctx, cancel_child) = ctx.with_cancel();
                cancel_child.cancel_with_cause(child_cause);
                cancel_parent.cancel_with_cause(parent_cause);
                (ctx, vec![cancel_parent, cancel_child])
            }),
            Some(Error::Canceled),
            WantCause::Custom(child_cause),
        ),
        (
            "WithCancelCause: parent cause before nil",
            Box::new(move || {
                let (ctx, cancel_parent) = Context::background().with_cancel();
                let (ctx, cancel_child) = ctx.with_cancel();
                cancel_parent.cancel_with_cause(parent_cause);
                cancel_child.cancel();
                (ctx, vec![cancel_parent, cancel_child])
            }),
            Some(Error::Canceled),
            WantCause::Custom(parent_cause),
        ),
        (
            "WithCancelCause: parent cause after nil",
            Box::new(move || {
                let (ctx, cancel_parent) = Context::background().with_cancel();
                let (ctx, cancel_child) = ctx.with_cancel();
                cancel_child.cancel();
                cancel_parent.cancel_with_cause(parent_cause);
                (ctx, vec![cancel_parent, cancel_child])
            }),
            Some(Error::Canceled),
            WantCause::Err(Error::Canceled),
        ),
        (
            "WithCancelCause: child cause after nil",
            Box::new(move || {
                let (ctx, cancel_parent) = Context::background().with_cancel();
                let (ctx, cancel_child) = ctx.with_cancel();
                cancel_parent.cancel();
                cancel_child.cancel_with_cause(child_cause);
                (ctx, vec![cancel_parent, cancel_child])
            }),
            Some(Error::Canceled),
            WantCause::Err(Error::Canceled),
        ),
        (
            "WithCancelCause: child cause before nil",
            Box::new(move || {
                let (ctx, cancel_parent) = Context::background().with_cancel();
                let (ctx, cancel_child) = ctx.with_cancel();
                cancel_child.cancel_with_cause(child_cause);
                cancel_parent.cancel();
                (ctx, vec![cancel_parent, cancel_child])
            }),
            Some(Error::Canceled),
            WantCause::Custom(child_cause),
        ),
        (
            "WithTimeout",
            Box::new(|| {
                let (ctx, cancel) = Context::background().with_timeout(Duration::ZERO);
                cancel.cancel();
                (ctx, vec![cancel])
            }),
            Some(Error::DeadlineExceeded),
            WantCause::Err(Error::DeadlineExceeded),
        ),
        (
            "WithTimeout canceled",
            Box::new(move || {
                let (ctx, cancel) = Context::background().with_timeout(forever);
                cancel.cancel();
                (ctx, vec![cancel])
            }),
            Some(Error::Canceled),
            WantCause::Err(Error::Canceled),
        ),
        (
            "WithTimeoutCause",
            Box::new(move || {
                let (ctx, cancel) =
                    Context::background().with_timeout_cause(Duration::ZERO, too_slow);
                cancel.cancel();
                (ctx, vec![cancel])
            }),
            Some(Error::DeadlineExceeded),
            WantCause::Custom(too_slow),
        ),
        (
            "WithTimeoutCause canceled",
            Box::new(move || {
                let (ctx, cancel) = Context::background().with_timeout_cause(forever, too_slow);
                cancel.cancel();
                (ctx, vec![cancel])
            }),
            Some(Error::Canceled),
            WantCause::Err(Error::Canceled),
        ),
        (
            "WithTimeoutCause stacked",
            Box::new(move || {
                let (ctx, cancel) = Context::background().with_cancel();
                let (ctx, discarded) = ctx.with_timeout_cause(Duration::ZERO, too_slow);
                cancel.cancel_with_cause(finished_early);
                (ctx, vec![cancel, discarded])
            }),
            Some(Error::DeadlineExceeded),
            WantCause::Custom(too_slow),
        ),
        (
            "WithTimeoutCause stacked canceled",
            Box::new(move || {
                let (ctx, cancel) = Context::background().with_cancel();
                let (ctx, discarded) = ctx.with_timeout_cause(forever, too_slow);
                cancel.cancel_with_cause(finished_early);
                (ctx, vec![cancel, discarded])
            }),
            Some(Error::Canceled),
            WantCause::Custom(finished_early),
        ),
        (
            "WithoutCancel",
            Box::new(|| (Context::background().without_cancel(), vec![])),
            None,
            WantCause::Nil,
        ),
        (
            "WithoutCancel canceled",
            Box::new(move || {
                let (ctx, cancel) = Context::background().with_cancel();
                let ctx = ctx.without_cancel();
                cancel.cancel_with_cause(finished_early);
                (ctx, vec![cancel])
            }),
            None,
            WantCause::Nil,
        ),
        (
            "WithoutCancel timeout",
            Box::new(move || {
                let (ctx, cancel) =
                    Context::background().with_timeout_cause(Duration::ZERO, too_slow);
                let ctx = ctx.without_cancel();
                cancel.cancel();
                (ctx, vec![cancel])
            }),
            None,
            WantCause::Nil,
        ),
    ];

    let mut failures = Vec::new();
    for (name, make, want_err, want_cause) in &tests {
        let (ctx, _guards) = make();
        let got_err = ctx.err();
        if got_err != *want_err {
            failures.push(format!("{name}: ctx.err() = {got_err:?} want {want_err:?}"));
        }
        let got = ctx.cause();
        let ok = match (&got, want_cause) {
            (None, WantCause::Nil) => true,
            (Some(c), WantCause::Err(e)) => c.downcast_ref::<Error>() == Some(e),
            (Some(c), WantCause::Custom(e)) => c.downcast_ref::<TestError>() == Some(e),
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "{name}: Cause(ctx) = {:?} want {want_cause:?}",
                got.as_ref().map(|c| c.to_string())
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "TestCause failures:\n{}",
        failures.join("\n")
    );
}

/// Port of Go's TestCauseRace (x_test.go).
///
/// Added: a `QUIESCENT` bound on the polling loop, so a lost cause fails
/// instead of hanging.
#[test]
fn test_cause_race() {
    let cause = TestError("TestCauseRace");
    let (ctx, cancel) = Context::background().with_cancel();
    let canceler = thread::spawn(move || cancel.cancel_with_cause(cause));
    let give_up = Instant::now() + QUIESCENT;
    loop {
        // Poll Cause, rather than waiting for Done, to test that
        // access to the underlying cause is synchronized properly.
        if let Some(err) = ctx.cause() {
            assert_eq!(
                err.downcast_ref::<TestError>(),
                Some(&cause),
                "Cause returned {err}, want {cause}"
            );
            break;
        }
        assert!(Instant::now() < give_up, "cause never set");
        thread::yield_now();
    }
    canceler.join().unwrap();
}

/// Port of Go's TestWithoutCancel (x_test.go).
///
/// Adapted: Go's `Done() == nil` (never ready) is a `Done` that stays pending
/// (hand-polled, and a short bounded wait). Added: the `.WithoutCancel`
/// `Display` suffix, and that canceling the original parent does not reach it.
#[test]
fn test_without_cancel() {
    // Go: key, value := "key", "value"; the key is the type StrKey here.
    let value = "value";
    let (parent, cancel) = Context::background().with_cancel();
    let ctx = parent.with_value(StrKey(value));
    let ctx = ctx.without_cancel();
    assert_eq!(ctx.deadline(), None, "ctx.deadline() want None");
    assert_eq!(ctx.remaining(), None, "ctx.remaining() want None");
    assert_blocks(&ctx, "ctx");
    assert_eq!(ctx.err(), None, "ctx.err() want None");
    assert_eq!(
        ctx.value::<StrKey>().map(|v| v.0),
        Some(value),
        "ctx.value::<StrKey>()"
    );
    let s = ctx.to_string();
    assert!(
        s.ends_with(".WithoutCancel"),
        "ctx.String() = {s:?} want suffix \".WithoutCancel\""
    );

    cancel.cancel();
    assert_blocks(&ctx, "ctx after canceling its parent");
    assert_eq!(ctx.wait_done_timeout(Duration::from_millis(20)), None);
    assert_eq!(ctx.value::<StrKey>().map(|v| v.0), Some(value));
}

/// Port of Go's TestContextErrDoneRace (x_test.go; Go issue #75533): once
/// `Err` is non-nil, `Done` must be closed.
///
/// Adapted: the `Done` future is taken before the cancel (as Go takes the
/// channel) and polled by hand once `err()` is set.
#[test]
fn test_context_err_done_race() {
    // 4 iterations reliably reproduced #75533.
    for i in 0..10 {
        let (ctx, cancel) = Context::background().with_cancel();
        let mut donec = PolledDone::new(&ctx);
        let canceler = thread::spawn(move || cancel.cancel());
        let give_up = Instant::now() + QUIESCENT;
        while ctx.err().is_none() {
            assert!(Instant::now() < give_up, "iteration {i}: err() never set");
            std::hint::spin_loop();
        }
        assert!(
            ctx.is_done(),
            "iteration {i}: ctx.err() is set, but ctx.is_done() is false"
        );
        assert_eq!(
            donec.poll(),
            Poll::Ready(Error::Canceled),
            "iteration {i}: ctx.err() is set, but ctx.done() is not ready"
        );
        canceler.join().unwrap();
    }
}

// ---------------------------------------------------------------------------
// example_test.go (each example's `// Output:` becomes assertions)
// ---------------------------------------------------------------------------

/// Port of Go's ExampleWithCancel (example_test.go).
///
/// Adapted: Go's generator selects between `ctx.Done()` and an unbuffered
/// send; std has no select, so the generator offers each number with
/// `try_send` on a rendezvous channel and otherwise waits briefly on the
/// context. The generator thread must return once the context is canceled,
/// while the receiver is still alive.
#[test]
fn example_with_cancel() {
    // gen generates integers in a separate thread and sends them to the
    // returned channel.
    fn generate(ctx: Context) -> (mpsc::Receiver<i32>, thread::JoinHandle<()>) {
        let (dst, rx) = mpsc::sync_channel(0);
        let handle = thread::spawn(move || {
            let mut n = 1;
            loop {
                match dst.try_send(n) {
                    Ok(()) => n += 1,
                    Err(mpsc::TrySendError::Full(_)) => {
                        if ctx.wait_done_timeout(Duration::from_millis(1)).is_some() {
                            return; // returning not to leak the thread
                        }
                    }
                    Err(mpsc::TrySendError::Disconnected(_)) => {
                        panic!("receiver gone before the context was canceled")
                    }
                }
            }
        });
        (rx, handle)
    }

    let (ctx, cancel) = Context::background().with_cancel();
    let (rx, handle) = generate(ctx);
    let mut output = Vec::new();
    for n in rx.iter() {
        output.push(n);
        if n == 5 {
            break;
        }
    }
    cancel.cancel(); // cancel when we are finished consuming integers
    assert_eq!(output, [1, 2, 3, 4, 5]);
    handle.join().expect("generator thread");
    drop(rx);
}

/// Port of Go's ExampleWithDeadline (example_test.go).
#[test]
fn example_with_deadline() {
    let d = Instant::now() + SHORT_DURATION;
    let (ctx, _cancel) = Context::background().with_deadline(d);

    // select { case <-neverReady: ...; case <-ctx.Done(): fmt.Println(ctx.Err()) }
    assert!(ctx.wait_done_timeout(QUIESCENT).is_some(), "ctx never done");
    let out = ctx.err().expect("err after done").to_string();
    assert_eq!(out, "context deadline exceeded");
}

/// Port of Go's ExampleWithTimeout (example_test.go).
///
/// Adapted: waits with `block_on(ctx.done())`.
#[test]
fn example_with_timeout() {
    let (ctx, _cancel) = Context::background().with_timeout(SHORT_DURATION);

    let err = block_on_done_within(&ctx, QUIESCENT).expect("ctx never done");
    assert_eq!(err.to_string(), "context deadline exceeded");
    assert_eq!(ctx.err().unwrap().to_string(), "context deadline exceeded");
}

/// Port of Go's ExampleWithValue (example_test.go).
///
/// Adapted: Go's `favContextKey("language")` / `favContextKey("color")` are
/// two key types.
#[test]
fn example_with_value() {
    struct Language(&'static str);
    #[allow(dead_code)] // never stored: it is the key that is not found
    struct Color(&'static str);

    fn f<T: Send + Sync + 'static>(ctx: &Context, key: &str, get: fn(&T) -> &str) -> String {
        match ctx.value::<T>() {
            Some(v) => format!("found value: {}", get(v)),
            None => format!("key not found: {key}"),
        }
    }

    let ctx = Context::background().with_value(Language("Go"));

    assert_eq!(f::<Language>(&ctx, "language", |v| v.0), "found value: Go");
    assert_eq!(f::<Color>(&ctx, "color", |v| v.0), "key not found: color");
}
