//! Wake-up lateness: how long after its deadline a waiter runs again.
//!
//! `cargo bench --bench latency` (about 80 s) prints one table: for every
//! waiter and condition, the lateness (the time from the deadline to the
//! waiter running again) at p50, p90, p99 and max, in µs. Deadlines are drawn
//! 1-3 ms ahead (a tiny xorshift PRNG, so wake-ups do not phase-lock with
//! anything periodic); every row takes [`SAMPLES`] samples after
//! [`WARMUP`] unrecorded ones, on a fresh thread.
//!
//! The `others` column is the CPU (in cores) that other processes on the
//! machine used while the row ran, from `/proc/stat` minus this process's own
//! time: on a shared machine, a row with `others` near 1 measured the
//! neighbours as much as the waiter.
//!
//! The same table goes to `${CARGO_TARGET_DIR:-target}/latency/latency.csv`,
//! every sample to `latency_samples.csv` next to it, and the lateness CDFs to
//! `latency.svg` (one line per waiter, log-scale x axis).
//!
//! # Rows
//!
//! The rows are the data in [`rows`]: a name, a [`Condition`] and a
//! `measure` function. Waiters:
//!
//! - cancelctx: `wait_done()` on a plain thread; `done().await` under tokio
//!   (current-thread and 2-worker runtimes built **without** the time
//!   driver), smol, async-std and `futures::executor`; `ctx.sleep(1 h)` cut
//!   short by the context's deadline; `cancelctx::timer::Timer` directly.
//! - the opt-in real-time timer thread: `wait_done()` and `done().await`
//!   with the global timer made a `SCHED_FIFO` one (in a child process, see
//!   `latency/realtime.rs`), and a private `SCHED_FIFO` `Timer` directly; in
//!   the CPU-bound condition, `is_done()` with that global timer.
//!   Skipped, with the OS's reason, where real-time priority is not allowed.
//! - the alternatives: tokio `sleep_until` (runtimes with the time driver),
//!   async-io `Timer::at`, async-std `task::sleep`, futures-timer `Delay`;
//! - the floor: `std::thread::sleep` until the deadline with the thread's
//!   timer slack at 1 ns (the best a thread can do without spinning), and
//!   with the default 50 µs slack; in the CPU-bound condition, a flag set by
//!   such a sleeping thread (the timer thread's job with nothing else in it),
//!   and the workers reading the clock themselves with nothing waking at the
//!   deadline (the lowest floor any design can reach there);
//! - Go's `context`, from the program in `benches/go` (built with `go` if it
//!   is on `PATH`; see `docs/benchmarks.md`).
//!
//! Conditions:
//!
//! - **idle**: nothing else runs in this process;
//! - **saturated**: 2 × cores threads spin for the whole row (Go's rows spin
//!   2 × GOMAXPROCS goroutines of their own instead);
//! - **CPU-bound**: every worker of a 2-worker tokio runtime spins on
//!   `ctx.is_done()` (or on a tokio `Sleep`'s `is_elapsed()`, a floor's
//!   flag, or the clock); the last spinner to start publishes the sample's
//!   deadline, so both workers spin when the clock starts. The sample is the
//!   time from the deadline until the last spinning worker saw it. A spinner
//!   gives up [`CAP`] after the deadline; such a sample is
//!   reported as capped (`>=50000`).
//!
//! # Flags
//!
//! `-- --quick` (CI): [`SAMPLES_QUICK`] samples per row and no Go rows
//! (`--go` adds them back); under 20 s. Without the `--bench` flag that
//! `cargo bench` passes (`cargo test --benches`) the run is quick too.
//! `--no-go` skips Go. Any other argument is a filter: only rows whose
//! `condition/name` contains it run.

#[path = "latency/cpu.rs"]
mod cpu;
#[path = "latency/go.rs"]
mod go;
#[path = "latency/realtime.rs"]
mod realtime;
#[path = "latency/report.rs"]
mod report;
#[path = "latency/waiters.rs"]
mod waiters;

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use cpu::CpuTicks;
use report::Measured;
use waiters::{Busy, Exec, Plan, blocking, on};

/// Samples per row.
const SAMPLES: usize = 400;
/// Samples per row with `--quick`.
const SAMPLES_QUICK: usize = 40;
/// Unrecorded samples first, to start threads and warm caches.
const WARMUP: usize = 10;
/// How long a CPU-bound spinner waits past the deadline before giving up.
const CAP: Duration = Duration::from_millis(50);

/// Under which load a row is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Condition {
    /// Nothing else runs in this process.
    Idle,
    /// 2 × cores threads spin in this process (Go: 2 × GOMAXPROCS goroutines).
    Saturated,
    /// Every worker of the runtime spins, checking the deadline in its loop.
    CpuBound,
}

impl Condition {
    const ALL: [Condition; 3] = [Condition::Idle, Condition::Saturated, Condition::CpuBound];

    fn label(self) -> String {
        let busy = 2 * cores();
        match self {
            Condition::Idle => "idle".to_owned(),
            Condition::Saturated => format!("saturated: {busy} busy threads"),
            Condition::CpuBound => "CPU-bound: every worker spins".to_owned(),
        }
    }

    fn key(self) -> &'static str {
        match self {
            Condition::Idle => "idle",
            Condition::Saturated => "saturated",
            Condition::CpuBound => "cpu-bound",
        }
    }
}

/// How a row's samples are taken: `Err` skips the row with a reason.
type Measure = fn(&Plan) -> Result<Vec<f64>, String>;

/// One line of the table.
#[derive(Clone, Copy)]
struct Row {
    name: &'static str,
    condition: Condition,
    /// Returns the lateness of every timeout in `plan.timeouts`, µs
    /// (`f64::INFINITY` for a capped sample).
    measure: Measure,
}

// Row names the goal checks look up.
const WAIT_DONE: &str = "cancelctx wait_done(), plain thread";
const FLOOR: &str = "floor: thread::sleep, timer slack 1 ns";
const TOKIO_SLEEP: &str = "tokio sleep_until, multi-thread rt";
const GO_DONE: &str = "Go <-ctx.Done()";
const GO_BUSY: &str = "Go <-ctx.Done(), 2 x GOMAXPROCS busy goroutines";
const SPIN_IS_DONE: &str = "cancelctx is_done() seen by 2 spinning tokio workers";
const SPIN_TOKIO: &str = "tokio Sleep::is_elapsed() seen by 2 spinning tokio workers";
const SPIN_FLOOR: &str =
    "floor: a flag set by a sleeping thread (1 ns slack), seen by 2 spinning tokio workers";
const SPIN_CLOCK: &str =
    "floor: 2 spinning tokio workers reading the clock (nothing wakes at the deadline)";

/// The waiters measured in the idle and the saturated condition.
const WAITERS: &[(&str, Measure)] = &[
    (WAIT_DONE, |p| blocking(p, waiters::wait_done)),
    (
        "cancelctx done().await, tokio current-thread rt (no time driver)",
        |p| on(Exec::TokioCurrent, p, waiters::ctx_done),
    ),
    (
        "cancelctx done().await, tokio 2-worker rt (no time driver)",
        |p| on(Exec::TokioMulti, p, waiters::ctx_done),
    ),
    ("cancelctx done().await, smol::block_on", |p| {
        on(Exec::Smol, p, waiters::ctx_done)
    }),
    ("cancelctx done().await, async-std task::spawn", |p| {
        on(Exec::AsyncStd, p, waiters::ctx_done)
    }),
    ("cancelctx done().await, futures::executor::block_on", |p| {
        on(Exec::Futures, p, waiters::ctx_done)
    }),
    (
        "cancelctx ctx.sleep(1 h) cut short by the deadline, block_on",
        |p| on(Exec::Futures, p, waiters::ctx_sleep),
    ),
    ("cancelctx Timer::global().sleep_until(), block_on", |p| {
        on(Exec::Futures, p, waiters::timer_sleep_until)
    }),
    ("cancelctx wait_done(), SCHED_FIFO global timer", |p| {
        realtime::run("wait_done", p)
    }),
    (
        "cancelctx done().await, block_on, SCHED_FIFO global timer",
        |p| realtime::run("done_futures", p),
    ),
    (
        "cancelctx Timer with a SCHED_FIFO thread: sleep_until(), block_on",
        |p| {
            waiters::realtime_timer()?;
            on(Exec::Futures, p, waiters::realtime_timer_sleep_until)
        },
    ),
    ("tokio sleep_until, current-thread rt", |p| {
        on(Exec::TokioCurrentTime, p, waiters::tokio_sleep_until)
    }),
    (TOKIO_SLEEP, |p| {
        on(Exec::TokioMultiTime, p, waiters::tokio_sleep_until)
    }),
    ("async-io Timer::at, async_io::block_on", |p| {
        on(Exec::AsyncIo, p, waiters::async_io_timer)
    }),
    ("async-std task::sleep, task::spawn", |p| {
        on(Exec::AsyncStd, p, waiters::async_std_sleep)
    }),
    ("futures-timer Delay, block_on", |p| {
        on(Exec::Futures, p, waiters::futures_timer_delay)
    }),
    (FLOOR, |p| {
        waiters::minimize_own_timer_slack()?;
        blocking(p, waiters::thread_sleep)
    }),
    ("floor: thread::sleep, default timer slack", |p| {
        blocking(p, waiters::thread_sleep)
    }),
];

/// Every row, in the order measured and printed.
fn rows() -> Vec<Row> {
    let mut rows = Vec::new();
    for condition in [Condition::Idle, Condition::Saturated] {
        for &(name, measure) in WAITERS {
            rows.push(Row {
                name,
                condition,
                measure,
            });
        }
    }
    rows.push(Row {
        name: GO_DONE,
        condition: Condition::Idle,
        measure: |p| go::run("idle", p),
    });
    rows.push(Row {
        name: GO_BUSY,
        condition: Condition::Saturated,
        measure: |p| go::run("busy", p),
    });
    rows.push(Row {
        name: SPIN_IS_DONE,
        condition: Condition::CpuBound,
        measure: waiters::spin_is_done,
    });
    rows.push(Row {
        name: "cancelctx is_done() seen by 2 spinning tokio workers, SCHED_FIFO global timer",
        condition: Condition::CpuBound,
        measure: |p| realtime::run("spin_is_done", p),
    });
    rows.push(Row {
        name: SPIN_FLOOR,
        condition: Condition::CpuBound,
        measure: waiters::spin_floor,
    });
    rows.push(Row {
        name: SPIN_CLOCK,
        condition: Condition::CpuBound,
        measure: waiters::spin_clock,
    });
    rows.push(Row {
        name: SPIN_TOKIO,
        condition: Condition::CpuBound,
        measure: waiters::spin_tokio_is_elapsed,
    });
    rows.push(Row {
        name: "Go ctx.Err() seen by GOMAXPROCS spinning goroutines",
        condition: Condition::CpuBound,
        measure: |p| go::run("spin", p),
    });
    rows.sort_by_key(|r| r.condition); // stable: keeps the order above
    rows
}

impl Row {
    fn is_go(&self) -> bool {
        self.name.starts_with("Go ")
    }

    /// Whether the harness starts the busy threads: Go's program spins its
    /// own goroutines, CPU-bound rows their own workers.
    fn needs_busy_threads(&self) -> bool {
        self.condition == Condition::Saturated && !self.is_go()
    }
}

fn cores() -> usize {
    thread::available_parallelism().map_or(2, |c| c.get())
}

/// `${CARGO_TARGET_DIR:-target}` (cargo runs benches in the package root).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from)
}

/// The 1-minute load average, for the report.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

struct Options {
    quick: bool,
    go: bool,
    filters: Vec<String>,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    // `cargo bench` passes `--bench`; without it (`cargo test --benches`)
    // this is a smoke run.
    let quick = flag("--quick") || !flag("--bench");
    let go = if quick {
        flag("--go")
    } else {
        !flag("--no-go")
    };
    let filters = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .cloned()
        .collect();
    Options { quick, go, filters }
}

fn main() {
    if let Ok(waiter) = std::env::var(realtime::CHILD) {
        realtime::child_main(&waiter);
    }
    let opts = options();
    let n = if opts.quick { SAMPLES_QUICK } else { SAMPLES };
    let started = Instant::now();
    let load_before = load_average();
    let cpu_before = CpuTicks::now();
    let dir = target_dir().join("latency");

    let go = if opts.go {
        go::prepare(&dir)
    } else {
        Err("skipped (--quick without --go, or --no-go)".to_owned())
    };
    if let Err(why) = &go {
        eprintln!("Go rows: {why}");
    }

    let mut measured = Vec::new();
    for (index, row) in rows().into_iter().enumerate() {
        let id = format!("{}/{}", row.condition.key(), row.name);
        if !opts.filters.is_empty() && !opts.filters.iter().any(|f| id.contains(f.as_str())) {
            continue;
        }
        if row.is_go() && go.is_err() {
            continue;
        }
        eprint!("{id} ... ");
        let plan = Plan::new(n, WARMUP, index as u64);
        let busy = row.needs_busy_threads().then(|| Busy::start(2 * cores()));
        let t0 = Instant::now();
        let cpu = CpuTicks::now();
        let result = thread::Builder::new()
            .name("latency-row".into())
            .spawn(move || (row.measure)(&plan))
            .expect("spawn the row's thread")
            .join()
            .unwrap_or_else(|_| Err("the row's thread panicked".to_owned()));
        drop(busy);
        let others = cpu.and_then(CpuTicks::others_since);
        match result {
            Ok(samples) => {
                eprintln!("{:.1} s", t0.elapsed().as_secs_f64());
                measured.push(Measured::new(row.name, row.condition, samples, others));
            }
            Err(why) => eprintln!("skipped: {why}"),
        }
    }
    let elapsed = started.elapsed();
    let load_after = load_average();
    let others = cpu_before
        .and_then(CpuTicks::others_since)
        .map_or_else(|| "?".to_owned(), |c| format!("{c:.2}"));

    println!();
    println!(
        "wake-up lateness: deadline (1-3 ms ahead) -> the waiter running again, µs\n\
         {n} samples per row{}, {} cores, {:.0} s; other processes used {others} cores on \
         average (column `others`: during the row); 1-min load average {load_before} -> \
         {load_after} (this run's own threads included)",
        if opts.quick { " (--quick)" } else { "" },
        cores(),
        elapsed.as_secs_f64()
    );
    println!();
    report::print_table(&measured);
    println!();
    report::print_goals(&measured);
    println!();
    match report::write_files(&dir, &measured) {
        Ok(paths) => {
            for p in paths {
                println!("wrote {}", p.display());
            }
        }
        Err(err) => eprintln!("could not write under {}: {err}", dir.display()),
    }
}
