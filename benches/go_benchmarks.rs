//! A criterion port of Go's `src/context/benchmark_test.go` (Go 1.27), under
//! the same names so the two reports compare line by line, plus benches of
//! cancelctx's own performance claims under `ours/`.
//!
//! Run: `cargo bench --bench go_benchmarks` (about two minutes), next to
//! `go test -run XXX -bench . -benchtime 300ms` in `$(go env GOROOT)/src/context`.
//! `docs/benchmarks.md` has the results and how to read them.
//!
//! # How Go maps to Rust here
//!
//! - A goroutine that runs for the whole benchmark (`b.RunParallel`'s) is a
//!   `std::thread`. A goroutine started per operation
//!   (`DeepValueNewGoRoutine`) is a task: `tokio::spawn` on a current-thread
//!   runtime, then awaiting its `JoinHandle` (Go's `go` + `wg.Wait()`, which
//!   also runs the new goroutine on the same thread). The OS-thread version
//!   is `ours/deep_value_new_thread/depth=N`.
//! - `b.RunParallel` is [`run_parallel`]: criterion's `iter_custom` with
//!   [`THREADS`] threads (GOMAXPROCS on the 2-core machine the numbers come
//!   from) taking iterations from a shared counter in chunks, like
//!   `testing.PB`. The time is the wall time for all iterations, so ns/op is
//!   comparable to Go's (Go also divides wall time by `b.N`).
//! - `select { case <-ctx.Done(): default: }` on a LIVE context
//!   (`ContextCancelDone`) is `ctx.is_done()`: Go's select-default only reads
//!   whether the channel is closed and registers nothing, which is what
//!   `is_done()` does (an atomic load, plus a per-thread count toward a clock
//!   read every 16 checks of a live context with a deadline). Polling a
//!   fresh `done()` future on a live context registers a waker, the work of
//!   a blocking receive: `ours/done_poll/live/threads=2`. On a CANCELED
//!   context (`CheckCanceled/Done`) the select receives, and the port polls
//!   a fresh `done()` once with a no-op waker ([`poll_done_once`]).
//! - A discarded Go cancel func (`root, _ = WithCancel(root)`) is a
//!   `CancelGuard::detach()`: the child stays live until its parent ends,
//!   as in Go. (`let (c, _) = ...` would cancel it at once instead.)
//! - Go's cancel func is one `CancelGuard` drop (`drop(guard)` cancels once).
//! - Go values are keyed by any comparable value; ours by type. Go's keys
//!   `0..depth` become `depth` distinct types ([`GoKey<N>`](GoKey)), and the
//!   Go miss `Value(-1)` a lookup of a type that is not on the chain
//!   ([`Missing`]). Distinct types matter: each value link summarizes the
//!   types above it in a 64-bit Bloom filter, so a chain of one type would
//!   make every miss O(1), which Go's chain of distinct keys does not allow.
//!   Hits are measured under `ours/value_hit/depth=N` (the value at the
//!   root: the whole chain walked).
//!
//! An allocation count per operation of the claims in `ours/` is printed
//! before the benchmarks run (a counting global allocator, switched on only
//! for that table).

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use cancelctx::{CancelGuard, Context};
use criterion::Criterion;

/// Threads for the ports of `b.RunParallel` (GOMAXPROCS of the machine the
/// Go numbers come from).
const THREADS: usize = 2;

/// Iterations a parallel worker takes from the shared counter at a time
/// (Go's `testing.PB` takes batches too).
const GRAIN: u64 = 64;

/// Go's `time.Hour`: timers that never fire during the benchmark.
const HOUR: Duration = Duration::from_secs(3600);

// ---------------------------------------------------------------------------
// Allocation counting (only switched on while the allocation table is made).

struct CountingAlloc;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

impl CountingAlloc {
    fn count() {
        // Relaxed: a statistic, read after the counted code has run on this
        // thread.
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

// SAFETY: every method forwards its arguments unchanged to `System`, which
// implements `GlobalAlloc` correctly; counting touches only two atomics and
// never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::count();
        // SAFETY: the caller upholds `alloc`'s contract, forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::count();
        // SAFETY: the caller upholds `alloc_zeroed`'s contract, forwarded as is.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::count();
        // SAFETY: `ptr` came from `System` (every allocation goes through
        // this forwarder) and the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with `layout` (see `realloc`).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Heap allocations per call of `op`, averaged over many calls on this
/// thread (other threads are idle meanwhile, so the count is `op`'s).
fn allocs_per_op(mut op: impl FnMut()) -> f64 {
    const N: usize = 10_000;
    for _ in 0..100 {
        op(); // warm: lazily started threads, grown buffers
    }
    ALLOCS.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    for _ in 0..N {
        op();
    }
    COUNTING.store(false, Ordering::Relaxed);
    ALLOCS.load(Ordering::Relaxed) as f64 / N as f64
}

// ---------------------------------------------------------------------------
// Helpers.

/// Go's `b.RunParallel`: `iters` calls of `body` spread over [`THREADS`]
/// threads, each with its own state from `init`. Returns the wall time from
/// the moment all workers are ready until the last one finishes (states are
/// dropped after the clock stops).
fn run_parallel<S, I, B>(iters: u64, init: I, body: B) -> Duration
where
    S: Send,
    I: Fn() -> S + Sync,
    B: Fn(&mut S) + Sync,
{
    let next = AtomicU64::new(0);
    let ready = Barrier::new(THREADS + 1);
    let (elapsed, states) = thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(|| {
                    let mut state = init();
                    ready.wait();
                    loop {
                        // Relaxed: only hands out disjoint ranges.
                        let start = next.fetch_add(GRAIN, Ordering::Relaxed);
                        if start >= iters {
                            break;
                        }
                        for _ in start..(start + GRAIN).min(iters) {
                            body(&mut state);
                        }
                    }
                    state
                })
            })
            .collect();
        ready.wait();
        let start = Instant::now();
        let states: Vec<S> = workers
            .into_iter()
            .map(|w| w.join().expect("worker panicked"))
            .collect();
        (start.elapsed(), states)
    });
    drop(states);
    elapsed
}

/// Runs `op` `iters` times: on the 2-thread harness if `parallel`, else on
/// this thread; returns the elapsed time criterion expects.
fn run_on(parallel: bool, iters: u64, op: impl Fn(&mut ()) + Sync) -> Duration {
    if parallel {
        return run_parallel(iters, || (), op);
    }
    let start = Instant::now();
    for _ in 0..iters {
        op(&mut ());
    }
    start.elapsed()
}

/// `select { case <-ctx.Done(): return true; default: return false }`:
/// one poll of a fresh `done()` future with a no-op waker.
fn poll_done_once(ctx: &Context) -> bool {
    let mut cx = TaskContext::from_waker(Waker::noop());
    let done = pin!(ctx.done());
    matches!(done.poll(&mut cx), Poll::Ready(_))
}

/// Go's `buildContextTree`: a chain of `depth` cancelable contexts under
/// `root`, each one's cancel func discarded (detached). Returns the leaf; Go
/// drops it too, but there the garbage collector frees the chain later while
/// the parents still hold their children, so the caller keeps the leaf alive
/// until after canceling the root to do the same work (see `CancelTree`).
fn build_context_tree(root: &Context, depth: usize) -> Context {
    let mut ctx = root.clone();
    for _ in 0..depth {
        let (child, cancel) = ctx.with_cancel();
        cancel.detach();
        ctx = child;
    }
    ctx
}

/// `depth` value contexts under `background`, keyed like Go's `WithValue(ctx, i, i)`.
fn value_chain(depth: usize) -> Context {
    WITH_GO_KEY[..depth]
        .iter()
        .fold(Context::background(), |ctx, with_key| with_key(&ctx))
}

/// Go's integer key `N` in the `DeepValue*` benchmarks: a type of its own.
struct GoKey<const N: usize>;

fn with_go_key<const N: usize>(ctx: &Context) -> Context {
    ctx.with_value(GoKey::<N>)
}

macro_rules! go_keys {
    ($($n:literal)*) => { [$(with_go_key::<$n> as fn(&Context) -> Context),*] };
}

/// `WITH_GO_KEY[i](ctx)` is Go's `WithValue(ctx, i, i)`.
static WITH_GO_KEY: [fn(&Context) -> Context; 100] = go_keys!(
    0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29
    30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56
    57 58 59 60 61 62 63 64 65 66 67 68 69 70 71 72 73 74 75 76 77 78 79 80 81 82 83
    84 85 86 87 88 89 90 91 92 93 94 95 96 97 98 99
);

/// `concurrency` live one-hour timeout contexts, as Go's `benchmarkWithTimeout`
/// keeps them (the contexts are kept too: a context nobody can observe
/// releases its timer at once, Go's stays armed until canceled).
fn live_timeouts(concurrency: usize) -> Vec<(Context, CancelGuard)> {
    (0..concurrency)
        .map(|_| Context::background().with_timeout(HOUR))
        .collect()
}

/// A derived context and its guard.
type Derived = (Context, CancelGuard);

/// [`live_timeouts`] made by 16 short-lived threads, one after the other.
/// A thread inserts into its own timer shard (threads get shards round-robin
/// as they first schedule, and there are at most 8), so every shard holds
/// its share, and the benchmark's worker threads, whichever shards they get,
/// insert into heaps of `concurrency / shards` entries, as Go's Ps do.
fn live_timeouts_in_every_shard(concurrency: usize) -> Vec<Derived> {
    (0..16)
        .flat_map(|i| {
            let share = concurrency / 16 + usize::from(i < concurrency % 16);
            thread::spawn(move || live_timeouts(share))
                .join()
                .expect("a live-timeout maker panicked")
        })
        .collect()
}

/// The key/value of `CommonParentCancel` (Go: `WithValue(Background(), "key", "value")`).
struct Key(&'static str);

/// Go's `ctx.Value(-1)`: a key that is not on the chain.
struct Missing;

/// Go's busy work between creating and canceling a context in
/// `CommonParentCancel`: `for i := 0; i < 100; i++ { x /= x + 1 }` with `x`
/// starting at 0. Go's compiler proves `x` stays 0 and deletes the divisions,
/// keeping only the empty 100-iteration loop (`go test -gcflags=-S` shows
/// it); LLVM would delete the loop as well. So the port runs an empty
/// 100-iteration loop kept alive by `black_box`: measured at 59 ns for two
/// such loops against Go's 58 ns on the benchmark machine. (Real `idiv`s on
/// an opaque `x` would cost ~290 ns per loop here, work Go never does.)
fn spin() {
    for i in 0..100u32 {
        black_box(i);
    }
}

// ---------------------------------------------------------------------------
// The ports of Go's benchmarks.

/// Go: `BenchmarkCommonParentCancel` (parallel).
fn common_parent_cancel(c: &mut Criterion) {
    let root = Context::background().with_value(Key("value"));
    let (shared, _shared_cancel) = root.with_cancel();
    c.bench_function("CommonParentCancel", |b| {
        b.iter_custom(|iters| {
            run_parallel(
                iters,
                || (),
                |()| {
                    let (ctx, cancel) = shared.with_cancel();
                    if ctx.value::<Key>().map(|k| k.0) != Some("value") {
                        panic!("should not be reached");
                    }
                    spin();
                    drop(cancel);
                    spin();
                    drop(ctx);
                },
            )
        });
    });
}

/// Go: `BenchmarkWithTimeout/concurrency={40,4000,400000}` (parallel).
///
/// Go's workload: `concurrency` one-hour timeout contexts stay live for the
/// whole benchmark, spread over every timer shard as Go's sit in every P's
/// heap (see [`live_timeouts_in_every_shard`]), and ONE OP creates 10
/// one-hour timeout contexts from `Background`, then cancels all 10 (10
/// create+cancel pairs per op, so divide ns/op by 10 for one pair).
fn with_timeout(c: &mut Criterion) {
    let mut group = c.benchmark_group("WithTimeout");
    for concurrency in [40usize, 4_000, 400_000] {
        let mut live = None;
        group.bench_function(format!("concurrency={concurrency}"), |b| {
            live.get_or_insert_with(|| live_timeouts_in_every_shard(concurrency));
            b.iter_custom(|iters| {
                run_parallel(
                    iters,
                    || Vec::with_capacity(10),
                    |wcf: &mut Vec<Derived>| {
                        for _ in 0..10 {
                            wcf.push(Context::background().with_timeout(HOUR));
                        }
                        for (ctx, cancel) in wcf.drain(..) {
                            drop(cancel);
                            drop(ctx);
                        }
                    },
                )
            });
        });
        drop(live);
    }
    group.finish();
}

/// Go: `BenchmarkCancelTree/depth={1,10,100,1000}/Root={Background,OpenCanceler,ClosedCanceler}`,
/// plus `Root=TimerCanceler` (a one-hour timeout root; Go 1.27 has no such
/// line, `benches/go/cancel_tree_test.go` adds it on the Go side).
///
/// Each op builds the chain and drops it; with a cancelable root, the root
/// is canceled while the chain is still registered (as in Go, where the
/// parents hold the children until the cancel walks them).
fn cancel_tree(c: &mut Criterion) {
    let mut group = c.benchmark_group("CancelTree");
    for depth in [1usize, 10, 100, 1000] {
        group.bench_function(format!("depth={depth}/Root=Background"), |b| {
            let root = Context::background();
            b.iter(|| drop(build_context_tree(&root, depth)));
        });
        group.bench_function(format!("depth={depth}/Root=OpenCanceler"), |b| {
            b.iter(|| {
                let (ctx, cancel) = Context::background().with_cancel();
                let leaf = build_context_tree(&ctx, depth);
                drop(cancel);
                drop(leaf);
            });
        });
        group.bench_function(format!("depth={depth}/Root=ClosedCanceler"), |b| {
            b.iter(|| {
                let (ctx, cancel) = Context::background().with_cancel();
                drop(cancel);
                drop(build_context_tree(&ctx, depth));
            });
        });
        group.bench_function(format!("depth={depth}/Root=TimerCanceler"), |b| {
            b.iter(|| {
                let (ctx, cancel) = Context::background().with_timeout(HOUR);
                let leaf = build_context_tree(&ctx, depth);
                drop(cancel);
                drop(leaf);
            });
        });
    }
    group.finish();
}

/// Go: `BenchmarkCheckCanceled/{Err,Done}` on a canceled context.
fn check_canceled(c: &mut Criterion) {
    let (ctx, cancel) = Context::background().with_cancel();
    drop(cancel);
    let mut group = c.benchmark_group("CheckCanceled");
    group.bench_function("Err", |b| b.iter(|| black_box(black_box(&ctx).err())));
    // Go: `select { case <-ctx.Done(): default: }`.
    group.bench_function("Done", |b| {
        b.iter(|| black_box(poll_done_once(black_box(&ctx))))
    });
    group.finish();
}

/// Go: `BenchmarkContextCancelDone` (parallel): the select-default check on
/// a LIVE context. Go's `select { case <-ctx.Done(): default: }` only reads
/// whether the channel is closed; the Rust call that does exactly that is
/// `is_done()`. (Polling a `Done` instead registers a listener, the work of
/// a *blocking* receive; that cost is `ours/done_poll/live/threads=2`.)
fn context_cancel_done(c: &mut Criterion) {
    let (ctx, _cancel) = Context::background().with_cancel();
    c.bench_function("ContextCancelDone", |b| {
        b.iter_custom(|iters| {
            run_parallel(
                iters,
                || (),
                |()| {
                    black_box(black_box(&ctx).is_done());
                },
            )
        });
    });
}

/// Go: `BenchmarkDeepValueNewGoRoutine/depth=N`: a lookup that misses, in
/// a new goroutine per op, which the op waits for. The goroutine is a tokio
/// task on a current-thread runtime (see the module docs); the whole loop
/// runs inside one `block_on`, as Go's runs inside one goroutine.
fn deep_value_new_task(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    let mut group = c.benchmark_group("DeepValueNewGoRoutine");
    for depth in [10usize, 20, 30, 50, 100] {
        let ctx = value_chain(depth);
        group.bench_function(format!("depth={depth}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let ctx = ctx.clone();
                        let task = tokio::spawn(async move {
                            black_box(ctx.value::<Missing>().is_some());
                        });
                        task.await.expect("the task does not panic");
                    }
                    start.elapsed()
                })
            });
        });
    }
    group.finish();
}

/// Go: `BenchmarkDeepValueSameGoRoutine/depth=N`: a lookup that misses.
fn deep_value_same_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("DeepValueSameGoRoutine");
    for depth in [10usize, 20, 30, 50, 100] {
        let ctx = value_chain(depth);
        group.bench_function(format!("depth={depth}"), |b| {
            b.iter(|| black_box(black_box(&ctx).value::<Missing>().is_some()));
        });
    }
    group.finish();
}

/// Go: `BenchmarkErrOK` and `BenchmarkErrCanceled`.
fn err_ok_canceled(c: &mut Criterion) {
    let (live, _live_cancel) = Context::background().with_cancel();
    c.bench_function("ErrOK", |b| {
        b.iter(|| assert!(black_box(&live).err().is_none()));
    });
    let (ended, cancel) = Context::background().with_cancel();
    drop(cancel);
    c.bench_function("ErrCanceled", |b| {
        b.iter(|| assert!(black_box(&ended).err().is_some()));
    });
}

// ---------------------------------------------------------------------------
// Our own claims.

fn ours(c: &mut Criterion) {
    let mut group = c.benchmark_group("ours");

    // Go's `DeepValue*` with what the ports above leave out: an OS thread per
    // op instead of a task, and lookups that hit (the value at the root, so
    // the whole chain is walked: the Bloom summary cannot help).
    for depth in [10usize, 100] {
        let ctx = value_chain(depth);
        group.bench_function(format!("deep_value_new_thread/depth={depth}"), |b| {
            b.iter(|| {
                thread::scope(|s| {
                    s.spawn(|| black_box(ctx.value::<Missing>().is_some()));
                });
            });
        });
        group.bench_function(format!("value_hit/depth={depth}"), |b| {
            b.iter(|| black_box(black_box(&ctx).value::<GoKey<0>>().is_some()));
        });
    }

    // Create + cancel, single thread.
    group.bench_function("with_cancel+cancel/parent=Background", |b| {
        let root = Context::background();
        b.iter(|| {
            let (ctx, cancel) = black_box(&root).with_cancel();
            drop(cancel);
            drop(ctx);
        });
    });
    let (parent, _parent_cancel) = Context::background().with_cancel();
    group.bench_function("with_cancel+cancel/parent=WithCancel", |b| {
        b.iter(|| {
            let (ctx, cancel) = black_box(&parent).with_cancel();
            drop(cancel);
            drop(ctx);
        });
    });
    // The common "explicit cancel, then the guard drops at scope end" shape:
    // the drop cancels a second time.
    group.bench_function("with_cancel+cancel()+guard_drop/parent=WithCancel", |b| {
        b.iter(|| {
            let (ctx, cancel) = black_box(&parent).with_cancel();
            cancel.cancel();
            drop(cancel);
            drop(ctx);
        });
    });

    // with_timeout + cancel with N live one-hour timers, single thread.
    // Goal: < 100 ns with 40 live, < 400 ns with 400,000.
    for live_count in [40usize, 400_000] {
        let mut live = None;
        group.bench_function(format!("with_timeout+cancel/live={live_count}"), |b| {
            live.get_or_insert_with(|| live_timeouts(live_count));
            let root = Context::background();
            b.iter(|| {
                let (ctx, cancel) = black_box(&root).with_timeout(HOUR);
                drop(cancel);
                drop(ctx);
            });
        });
        drop(live);
    }

    // Values.
    group.bench_function("with_value+value", |b| {
        let root = Context::background();
        b.iter(|| {
            let ctx = black_box(&root).with_value(Key("value"));
            black_box(ctx.value::<Key>().map(|k| k.0));
        });
    });

    // Observation. Goal: no allocation, a few nanoseconds.
    let (live, _live_cancel) = Context::background().with_timeout(HOUR);
    let (ended, cancel) = Context::background().with_timeout(HOUR);
    drop(cancel);
    for (state, ctx) in [("live", &live), ("canceled", &ended)] {
        group.bench_function(format!("err/{state}"), |b| {
            b.iter(|| black_box(black_box(ctx).err()))
        });
        group.bench_function(format!("is_done/{state}"), |b| {
            b.iter(|| black_box(black_box(ctx).is_done()));
        });
        group.bench_function(format!("deadline/{state}"), |b| {
            b.iter(|| black_box(black_box(ctx).deadline()));
        });
    }
    group.bench_function("done_poll/canceled", |b| {
        b.iter(|| black_box(poll_done_once(black_box(&ended))));
    });
    // Polling `done()` on a live context: registers (and drops) a listener.
    group.bench_function("done_poll/live/threads=2", |b| {
        b.iter_custom(|iters| {
            run_parallel(
                iters,
                || (),
                |()| {
                    black_box(poll_done_once(black_box(&live)));
                },
            )
        });
    });

    // Create + cancel throughput, 1 vs 2 threads (ns per pair, wall time).
    for threads_label in ["threads=1", "threads=2"] {
        let parallel = threads_label == "threads=2";
        group.bench_function(
            format!("with_cancel+cancel/shared_parent/{threads_label}"),
            |b| {
                let op = |_: &mut ()| {
                    let (ctx, cancel) = black_box(&parent).with_cancel();
                    drop(cancel);
                    drop(ctx);
                };
                b.iter_custom(|iters| run_on(parallel, iters, op));
            },
        );
        group.bench_function(format!("with_timeout+cancel/{threads_label}"), |b| {
            let op = |_: &mut ()| {
                let (ctx, cancel) = Context::background().with_timeout(HOUR);
                drop(cancel);
                drop(ctx);
            };
            b.iter_custom(|iters| run_on(parallel, iters, op));
        });
    }

    // CancelTree/depth=1000/Root=OpenCanceler the Rust way: the chain is
    // dropped (and unregisters itself) before the root is canceled.
    group.bench_function("cancel_tree_dropped_first/depth=1000", |b| {
        b.iter(|| {
            let (ctx, cancel) = Context::background().with_cancel();
            drop(build_context_tree(&ctx, 1000));
            drop(cancel);
        });
    });
    group.finish();
}

/// Allocations per operation of the claims, printed before the benchmarks.
fn print_allocation_table() {
    let root = Context::background();
    let (parent, _parent_cancel) = root.with_cancel();
    let (live, _live_cancel) = root.with_timeout(HOUR);
    let (ended, cancel) = root.with_timeout(HOUR);
    drop(cancel);
    let rows: [(&str, f64); 10] = [
        (
            "Context::background()",
            allocs_per_op(|| drop(black_box(Context::background()))),
        ),
        (
            "with_cancel + cancel (parent=Background)",
            allocs_per_op(|| drop(black_box(root.with_cancel()))),
        ),
        (
            "with_cancel + cancel (parent=WithCancel)",
            allocs_per_op(|| drop(black_box(parent.with_cancel()))),
        ),
        (
            "with_cancel + done() poll (live) + cancel",
            allocs_per_op(|| {
                let (ctx, cancel) = root.with_cancel();
                black_box(poll_done_once(&ctx));
                drop(cancel);
            }),
        ),
        (
            "with_timeout + cancel",
            allocs_per_op(|| drop(black_box(root.with_timeout(HOUR)))),
        ),
        (
            "with_value + value",
            allocs_per_op(|| {
                let ctx = root.with_value(Key("value"));
                black_box(ctx.value::<Key>().map(|k| k.0));
            }),
        ),
        (
            "err() + is_done() + deadline() (live)",
            allocs_per_op(|| {
                black_box((live.err(), live.is_done(), live.deadline()));
            }),
        ),
        (
            "err() + is_done() + deadline() (canceled)",
            allocs_per_op(|| {
                black_box((ended.err(), ended.is_done(), ended.deadline()));
            }),
        ),
        (
            "done() poll (canceled)",
            allocs_per_op(|| {
                black_box(poll_done_once(&ended));
            }),
        ),
        (
            "done() poll (live)",
            allocs_per_op(|| {
                black_box(poll_done_once(&live));
            }),
        ),
    ];
    println!("allocations per operation (counting global allocator, one thread):");
    for (name, n) in rows {
        println!("  {name:<44} {n:>5.2}");
    }
    println!();
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .nresamples(10_000)
        .without_plots()
        .configure_from_args();
    print_allocation_table();
    common_parent_cancel(&mut c);
    with_timeout(&mut c);
    cancel_tree(&mut c);
    check_canceled(&mut c);
    context_cancel_done(&mut c);
    deep_value_new_task(&mut c);
    deep_value_same_thread(&mut c);
    err_ok_canceled(&mut c);
    ours(&mut c);
    c.final_summary();
}
