//! Scale: what many live timeouts cost, how fast a wide cancel completes, and
//! whether two threads creating and canceling timeouts do more than one.
//!
//! `cargo bench --bench scale` (about 20 s) prints one table:
//!
//! - **memory per live timeout**: the process's resident set size
//!   (`/proc/self/statm`) before and after creating [`LIVE`] one-hour
//!   `with_timeout` contexts, kept live (context and guard) in a `Vec`,
//!   divided by their number. It includes everything a live timeout costs:
//!   the context node, its timer heap slot, the allocator's overhead, and the
//!   caller's 2 handles in the `Vec` (shown separately).
//! - **cancel fan-out**: one `with_cancel` root with [`FAN_OUT`] live
//!   children; the time for the root's cancel to return (when it returns,
//!   every child is done). Median of [`TRIALS`]; children made with
//!   `with_cancel` and, separately, with one-hour `with_timeout`s (whose timer
//!   entries the cancel removes).
//! - **create+cancel on 1 vs 2 threads**: `with_timeout(1 h)` then the guard's
//!   drop, in a loop for [`SLICE`] on 1 thread and on 2, alternating, median
//!   of [`TRIALS`]; the ratio of total operations per second. `with_cancel`
//!   (no timer) is the control.
//!
//! `-- --quick`: fewer live timeouts and shorter slices (a smoke run).

#[path = "latency/cpu.rs"]
mod cpu;

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use cancelctx::timer::Timer;
use cancelctx::{CancelGuard, Context};
use cpu::CpuTicks;

/// Live timeouts for the memory measurement.
const LIVE: usize = 1_000_000;
/// Children of the fan-out root.
const FAN_OUT: usize = 100_000;
/// Trials per measurement (the median is reported).
const TRIALS: usize = 5;
/// How long one throughput trial runs.
const SLICE: Duration = Duration::from_millis(400);
/// Go's `time.Hour`: deadlines that never fire during the run.
const HOUR: Duration = Duration::from_secs(3600);

// ---------------------------------------------------------------------------
// Heap accounting, switched on only around the memory measurement (off, it
// costs one relaxed load per allocation and shares no written cache line).

struct Accounting;

static TRACK: AtomicBool = AtomicBool::new(false);
/// Bytes requested and not yet freed while tracking.
static HEAP: AtomicIsize = AtomicIsize::new(0);
/// Allocations made while tracking, by size in 8-byte steps (the last
/// bucket: 1 KiB and more).
static SIZES: [AtomicUsize; 129] = [const { AtomicUsize::new(0) }; 129];

impl Accounting {
    fn add(bytes: isize) {
        // Relaxed: statistics, read by the tracking thread after the work.
        if TRACK.load(Ordering::Relaxed) {
            HEAP.fetch_add(bytes, Ordering::Relaxed);
            if bytes > 0 {
                let bucket = (bytes as usize).div_ceil(8).min(SIZES.len() - 1);
                SIZES[bucket].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Starts tracking from zero.
    fn start() {
        HEAP.store(0, Ordering::Relaxed);
        for s in &SIZES {
            s.store(0, Ordering::Relaxed);
        }
        TRACK.store(true, Ordering::Relaxed);
    }

    /// Stops tracking: live bytes, and (size, count) of the allocations made.
    fn stop() -> (isize, Vec<(usize, usize)>) {
        TRACK.store(false, Ordering::Relaxed);
        let sizes = SIZES
            .iter()
            .enumerate()
            .map(|(i, c)| (i * 8, c.load(Ordering::Relaxed)))
            .filter(|&(_, c)| c > 0)
            .collect();
        (HEAP.load(Ordering::Relaxed), sizes)
    }
}

// SAFETY: every method forwards its arguments unchanged to `System`, which
// implements `GlobalAlloc` correctly; the accounting touches only atomics and
// never allocates.
unsafe impl GlobalAlloc for Accounting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::add(layout.size() as isize);
        // SAFETY: the caller upholds `alloc`'s contract, forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::add(layout.size() as isize);
        // SAFETY: the caller upholds `alloc_zeroed`'s contract, forwarded as is.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::add(new_size as isize - layout.size() as isize);
        // SAFETY: `ptr` came from `System` (every allocation goes through
        // this forwarder) and the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        Self::add(-(layout.size() as isize));
        // SAFETY: `ptr` came from `System` with `layout` (see `realloc`).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Accounting = Accounting;

/// Resident set size in bytes: `statm`'s resident pages times the page size
/// (which `VmRSS` in `/proc/self/status` gives away, read alongside).
fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("statm's resident field");
    pages * page_size()
}

fn page_size() -> usize {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        let pages: f64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0.0);
        if kb > 0.0 && pages > 0.0 {
            // The nearest power of two to the measured ratio.
            let ratio = kb * 1024.0 / pages;
            1usize << (ratio.log2().round() as u32)
        } else {
            4096
        }
    })
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

struct Line {
    what: String,
    value: String,
    goal: String,
}

fn line(what: impl Into<String>, value: impl Into<String>, goal: impl Into<String>) -> Line {
    Line {
        what: what.into(),
        value: value.into(),
        goal: goal.into(),
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

// ---------------------------------------------------------------------------

fn memory(n: usize, lines: &mut Vec<Line>) {
    // Start the timer thread and its heap first, so they are not counted.
    drop(Context::background().with_timeout(HOUR));
    let armed_before = Timer::global().stats().armed;
    let handle = std::mem::size_of::<(Context, CancelGuard)>();

    // What a with_timeout allocates once the timer's storage is warm: the
    // allocations of 10,000 of them, by size, per timeout.
    let per_op = {
        const K: usize = 10_000;
        // One timeout held across the warm-up: a shard that empties shrinks
        // its storage (above 8 Ki entries), which would make it cold again.
        let hold = Context::background().with_timeout(HOUR);
        let warm: Vec<_> = (0..K)
            .map(|_| Context::background().with_timeout(HOUR))
            .collect();
        drop(warm);
        let mut kept = Vec::with_capacity(K);
        Accounting::start();
        for _ in 0..K {
            kept.push(Context::background().with_timeout(HOUR));
        }
        let (_, sizes) = Accounting::stop();
        drop(kept);
        drop(hold);
        sizes
            .iter()
            .filter(|&&(_, c)| c >= K / 10)
            .map(|&(size, c)| format!("{:.2} x {size} B", c as f64 / K as f64))
            .collect::<Vec<_>>()
            .join(", ")
    };

    let before = rss_bytes();
    Accounting::start();
    let t0 = Instant::now();
    let mut live: Vec<(Context, CancelGuard)> = Vec::with_capacity(n);
    for _ in 0..n {
        live.push(Context::background().with_timeout(HOUR));
    }
    let created = t0.elapsed();
    let (heap, _) = Accounting::stop();
    let after = rss_bytes();
    let armed = Timer::global().stats().armed - armed_before;
    assert_eq!(armed, n, "every timeout is armed");

    let per = after.saturating_sub(before) as f64 / n as f64;
    lines.push(line(
        format!("RSS per live timeout ({n} one-hour with_timeout, handles kept)"),
        format!("{per:.0} B"),
        format!("<= 200 B: {}", verdict(per <= 200.0)),
    ));
    lines.push(line(
        "  of which the caller's (Context, CancelGuard) in the Vec",
        format!("{handle} B"),
        "",
    ));
    lines.push(line(
        "  the rest: node + timer slot + allocator",
        format!("{:.0} B", per - handle as f64),
        "",
    ));
    lines.push(line(
        "  heap bytes requested per timeout (handles' Vec, nodes, timer storage)",
        format!("{:.0} B", heap as f64 / n as f64),
        "",
    ));
    lines.push(line(
        "  allocations per with_timeout (storage warm), by size",
        per_op,
        "",
    ));
    lines.push(line(
        format!(
            "  creating them, heap accounting on: per timeout ({} ms in all)",
            created.as_millis()
        ),
        format!("{:.0} ns", created.as_nanos() as f64 / n as f64),
        "",
    ));

    let t0 = Instant::now();
    drop(live);
    let dropped = t0.elapsed();
    lines.push(line(
        "  dropping them (cancel + free): per timeout",
        format!("{:.0} ns", dropped.as_nanos() as f64 / n as f64),
        "",
    ));
    lines.push(line(
        "  RSS still held after dropping them all, per timeout",
        format!(
            "{:.0} B",
            rss_bytes().saturating_sub(before) as f64 / n as f64
        ),
        "",
    ));
}

/// Median time for the root's cancel to return, with `n` live children
/// made by `child`.
fn fan_out(n: usize, trials: usize, child: fn(&Context) -> (Context, CancelGuard)) -> Duration {
    let mut times = Vec::new();
    for _ in 0..trials {
        let (root, guard) = Context::background().with_cancel();
        let children: Vec<(Context, CancelGuard)> = (0..n).map(|_| child(&root)).collect();
        assert_eq!(root.child_count(), n);
        let t0 = Instant::now();
        guard.cancel();
        let took = t0.elapsed();
        assert!(
            children.iter().all(|(c, _)| c.is_done()),
            "cancel returns once every child is done"
        );
        times.push(took.as_secs_f64());
        drop(children);
    }
    Duration::from_secs_f64(median(times))
}

fn fan_outs(n: usize, trials: usize, lines: &mut Vec<Line>) {
    let plain = fan_out(n, trials, |root| root.with_cancel());
    lines.push(line(
        format!("cancel fan-out to {n} with_cancel children (median of {trials})"),
        format!("{:.1} ms", plain.as_secs_f64() * 1e3),
        format!("< 50 ms: {}", verdict(plain < Duration::from_millis(50))),
    ));
    lines.push(line(
        "  per child",
        format!("{:.0} ns", plain.as_nanos() as f64 / n as f64),
        "",
    ));
    let timed = fan_out(n, trials, |root| root.with_timeout(HOUR));
    lines.push(line(
        format!("cancel fan-out to {n} one-hour with_timeout children"),
        format!("{:.1} ms", timed.as_secs_f64() * 1e3),
        "",
    ));
    lines.push(line(
        "  per child",
        format!("{:.0} ns", timed.as_nanos() as f64 / n as f64),
        "",
    ));
}

/// Total create+cancel operations per second on `threads` threads, each
/// running `op` in a loop for `slice`.
fn ops_per_sec(threads: usize, slice: Duration, op: fn()) -> f64 {
    let start = Barrier::new(threads + 1);
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    let mut ops = 0u64;
                    // Relaxed: a stop flag, checked every 64 operations.
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..64 {
                            op();
                        }
                        ops += 64;
                    }
                    ops
                })
            })
            .collect();
        start.wait();
        let t0 = Instant::now();
        thread::sleep(slice);
        stop.store(true, Ordering::Relaxed);
        let ops: u64 = workers
            .into_iter()
            .map(|w| w.join().expect("worker panicked"))
            .sum();
        ops as f64 / t0.elapsed().as_secs_f64()
    })
}

fn scaling(
    name: &str,
    slice: Duration,
    trials: usize,
    op: fn(),
    goal: bool,
    lines: &mut Vec<Line>,
) {
    op(); // warm: the timer thread
    let cpu = CpuTicks::now();
    let (mut one, mut two) = (Vec::new(), Vec::new());
    for _ in 0..trials {
        one.push(ops_per_sec(1, slice, op));
        two.push(ops_per_sec(2, slice, op));
    }
    let (one, two) = (median(one), median(two));
    let ratio = two / one;
    let others = cpu
        .and_then(CpuTicks::others_since)
        .map_or_else(|| "?".to_owned(), |c| format!("{c:.2}"));
    lines.push(line(
        format!("{name}: 1 thread"),
        format!("{:.2} M ops/s ({:.0} ns/op)", one / 1e6, 1e9 / one),
        "",
    ));
    lines.push(line(
        format!("{name}: 2 threads"),
        format!("{:.2} M ops/s ({:.0} ns/op wall)", two / 1e6, 1e9 / two),
        "",
    ));
    lines.push(line(
        format!("{name}: 2 threads / 1 thread (other processes used {others} cores)"),
        format!("{ratio:.2} x"),
        if goal {
            format!(">= 1.5x: {}", verdict(ratio >= 1.5))
        } else {
            "(control)".to_owned()
        },
    ));
}

/// Single-thread ns per call of `op`: the median of [`TRIALS`] timed loops.
fn ns_per_op(iters: u32, op: impl Fn()) -> f64 {
    let mut times = Vec::new();
    for _ in 0..TRIALS {
        let t0 = Instant::now();
        for _ in 0..iters {
            op();
        }
        times.push(t0.elapsed().as_nanos() as f64 / f64::from(iters));
    }
    median(times)
}

/// Where a `with_timeout` + cancel spends its time: the same with 40 live
/// one-hour timeouts (Go's `WithTimeout/concurrency=40`), next to its parts
/// measured alone through the public API.
fn breakdown(iters: u32, lines: &mut Vec<Line>) {
    let _live: Vec<_> = (0..40)
        .map(|_| Context::background().with_timeout(HOUR))
        .collect();
    let whole = ns_per_op(iters, || {
        drop(black_box(Context::background().with_timeout(HOUR)))
    });
    let now = ns_per_op(iters, || {
        black_box(Instant::now());
    });
    let cancel = ns_per_op(iters, || {
        drop(black_box(Context::background().with_cancel()))
    });
    let alloc = ns_per_op(iters, || drop(black_box(Box::new([0u8; 104]))));
    let mutex = parking_lot::Mutex::new(0u64);
    let lock = ns_per_op(iters, || *black_box(&mutex).lock() += 1);
    let shard = parking_lot::Mutex::new(Vec::with_capacity(64));
    let skeleton = ns_per_op(iters, || skeleton(black_box(&shard)));
    let at = Instant::now() + HOUR;
    let timer = ns_per_op(iters, || {
        black_box(Timer::global().schedule(black_box(at), || {})).cancel();
    });
    lines.push(line(
        "with_timeout(1 h) + cancel, 1 thread, 40 live timeouts",
        format!("{whole:.0} ns"),
        format!("< 100 ns: {}", verdict(whole < 100.0)),
    ));
    lines.push(line("  Instant::now()", format!("{now:.0} ns"), ""));
    lines.push(line(
        "  with_cancel + cancel (node, guard, observe counters; no timer)",
        format!("{cancel:.0} ns"),
        "",
    ));
    lines.push(line(
        "  Timer::global().schedule(1 h, no-op) + Entry::cancel",
        format!("{timer:.0} ns"),
        "",
    ));
    lines.push(line(
        "  the rest (arming the node: alarm Weak, node lock, entry kept)",
        format!("{:.0} ns", whole - now - cancel - timer),
        "",
    ));
    lines.push(line(
        "  for scale: malloc + free of 104 B (a node)",
        format!("{alloc:.0} ns"),
        "",
    ));
    lines.push(line(
        "  for scale: an uncontended parking_lot lock + unlock",
        format!("{lock:.0} ns"),
        "",
    ));
    lines.push(line(
        "  for scale: the same steps with no logic (see `skeleton`)",
        format!("{skeleton:.0} ns"),
        "",
    ));
}

/// A node as big as a `CancelNode`, for [`skeleton`].
struct BareNode {
    lock: parking_lot::Mutex<[u64; 4]>,
    done: std::sync::atomic::AtomicU8,
    _rest: [u64; 5],
}

/// The machine operations a `with_timeout` + cancel performs in this design,
/// with none of the logic: the clock read, one allocation, three lock pairs
/// (schedule on the timer shard, arm the node, mark it done; the fourth,
/// removal from the shard, is the `pop`), the guard's and the alarm's `Weak`
/// counts, the guard's upgrade and the drops. What the real path costs above
/// this is its bookkeeping (heap order, slab, generations, states).
#[inline(never)]
fn skeleton(shard: &parking_lot::Mutex<Vec<(u64, std::sync::Weak<BareNode>)>>) {
    let now = Instant::now();
    let at = now + HOUR;
    let node = std::sync::Arc::new(BareNode {
        lock: parking_lot::Mutex::new([0; 4]),
        done: std::sync::atomic::AtomicU8::new(0),
        _rest: [0; 5],
    });
    let guard = std::sync::Arc::downgrade(&node);
    let alarm = std::sync::Arc::downgrade(&node);
    let nanos = at.duration_since(now).as_nanos() as u64;
    shard.lock().push((nanos, alarm));
    node.lock.lock()[0] = nanos;
    let strong = guard.upgrade().expect("alive");
    {
        let mut state = strong.lock.lock();
        state[1] = 1;
        strong.done.store(1, Ordering::Release);
    }
    let entry = shard.lock().pop();
    drop(entry);
    drop(strong);
    drop(guard);
    drop(black_box(node));
}

/// `git describe` of the tree measured, and whether src/ or timer/ differ
/// from it.
fn tree() -> String {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let Some(head) = run(&["rev-parse", "--short", "HEAD"]) else {
        return "(not a git checkout)".to_owned();
    };
    match run(&["status", "--porcelain", "--", "src", "timer"]) {
        Some(s) if !s.is_empty() => {
            format!(
                "{head} + uncommitted changes in {} files under src/, timer/",
                s.lines().count()
            )
        }
        _ => head,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick") || !args.iter().any(|a| a == "--bench");
    let (live, fan, trials, slice) = if quick {
        (100_000, 10_000, 3, Duration::from_millis(50))
    } else {
        (LIVE, FAN_OUT, TRIALS, SLICE)
    };
    let t0 = Instant::now();
    let cpu = CpuTicks::now();
    let mut lines = Vec::new();

    breakdown(if quick { 20_000 } else { 200_000 }, &mut lines);
    memory(live, &mut lines);
    fan_outs(fan, trials, &mut lines);
    scaling(
        "with_timeout(1 h) + cancel",
        slice,
        trials,
        || drop(black_box(Context::background().with_timeout(HOUR))),
        true,
        &mut lines,
    );
    scaling(
        "with_cancel + cancel",
        slice,
        trials,
        || drop(black_box(Context::background().with_cancel())),
        false,
        &mut lines,
    );

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "scale: cancelctx at {}; {} cores; other processes used {} cores on average; \
         1-min load {}; {:.1} s{}",
        tree(),
        thread::available_parallelism().map_or(0, |c| c.get()),
        cpu.and_then(CpuTicks::others_since)
            .map_or_else(|| "?".to_owned(), |c| format!("{c:.2}")),
        load.split_whitespace().next().unwrap_or("?"),
        t0.elapsed().as_secs_f64(),
        if quick { " (--quick)" } else { "" }
    );
    let w0 = lines.iter().map(|l| l.what.len()).max().unwrap_or(0);
    let w1 = lines.iter().map(|l| l.value.len()).max().unwrap_or(0);
    for l in &lines {
        println!("{:<w0$}  {:>w1$}  {}", l.what, l.value, l.goal);
    }
}
