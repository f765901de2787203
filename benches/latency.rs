//! Wake-up lateness: how long after its deadline a waiter runs again.
//!
//! For every sample a deadline 1-3 ms ahead is drawn (a tiny xorshift PRNG),
//! the waiter blocks until it, and on waking records
//! `Instant::now() - deadline`. For the context rows `deadline` is
//! `ctx.deadline().unwrap()` of a `with_timeout` context. Rows:
//!
//! - cancelctx `wait_done()` on a plain thread;
//! - cancelctx `done()` awaited under `futures::executor::block_on`;
//! - cancelctx `ctx.sleep(1 h)` under `block_on`, cut short by the context's
//!   deadline (`Err(DeadlineExceeded)`);
//! - `cancelctx::timer::Timer::global().sleep_until(deadline)` under `block_on`;
//! - the floor: `std::thread::sleep` until the deadline with the default
//!   50 µs timer slack, and with the thread's slack set to 1 ns through
//!   `/proc/<tid>/timerslack_ns` (Linux; the row is skipped if that fails);
//! - `wait_done()` and `done()` again with 2 × cores busy threads spinning
//!   (Go's timers are late by tens of ms there; `benches/go` measures Go).
//!
//! Prints one table (p50, p90, p99, max in µs) and the total elapsed time,
//! and writes the same table as CSV to
//! `${CARGO_TARGET_DIR:-target}/latency/latency.csv`.
//!
//! `cargo bench --bench latency` (about 10 s); `-- --quick` for a smoke run
//! with fewer samples (also what `cargo test --benches` gets: without the
//! `--bench` that `cargo bench` passes, the run is quick). Other arguments are
//! ignored.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use cancelctx::Context;
use cancelctx::timer::Timer;
use futures::executor::block_on;

/// Samples per row (and with `--quick`).
const SAMPLES: usize = 400;
const SAMPLES_QUICK: usize = 40;
/// Unrecorded samples first, to start the timer thread and warm caches.
const WARMUP: usize = 10;

/// A tiny xorshift64* generator: deadlines spread over 1-3 ms so wake-ups do
/// not phase-lock with anything periodic.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let clock = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        let seed = clock.map_or(0, |d| d.as_nanos() as u64) ^ 0x9E37_79B9_7F4A_7C15;
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A timeout uniformly in [1 ms, 3 ms).
    fn timeout(&mut self) -> Duration {
        Duration::from_micros(1_000 + self.next() % 2_000)
    }
}

/// One waiter: given a timeout, waits and returns the lateness (µs).
type Waiter = fn(Duration) -> f64;

fn lateness_us(deadline: Instant) -> f64 {
    Instant::now()
        .saturating_duration_since(deadline)
        .as_secs_f64()
        * 1e6
}

fn wait_done(timeout: Duration) -> f64 {
    let (ctx, _cancel) = Context::background().with_timeout(timeout);
    let deadline = ctx.deadline().expect("with_timeout sets a deadline");
    ctx.wait_done();
    lateness_us(deadline)
}

fn done_block_on(timeout: Duration) -> f64 {
    let (ctx, _cancel) = Context::background().with_timeout(timeout);
    let deadline = ctx.deadline().expect("with_timeout sets a deadline");
    block_on(ctx.done());
    lateness_us(deadline)
}

fn ctx_sleep_block_on(timeout: Duration) -> f64 {
    let (ctx, _cancel) = Context::background().with_timeout(timeout);
    let deadline = ctx.deadline().expect("with_timeout sets a deadline");
    let slept = block_on(ctx.sleep(Duration::from_secs(3600)));
    assert!(slept.is_err(), "the context's deadline ends the sleep");
    lateness_us(deadline)
}

fn timer_sleep_until(timeout: Duration) -> f64 {
    let deadline = Instant::now() + timeout;
    block_on(Timer::global().sleep_until(deadline));
    lateness_us(deadline)
}

fn thread_sleep(timeout: Duration) -> f64 {
    let deadline = Instant::now() + timeout;
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        thread::sleep(deadline - now);
    }
    lateness_us(deadline)
}

/// Sets the calling thread's timer slack to 1 ns without `unsafe`: writes
/// `/proc/<tid>/timerslack_ns`, the tid read from `/proc/thread-self`.
fn minimize_own_timer_slack() -> std::io::Result<()> {
    let link = std::fs::read_link("/proc/thread-self")?; // "<pid>/task/<tid>"
    let tid = link
        .file_name()
        .and_then(|t| t.to_str())
        .ok_or_else(|| std::io::Error::other("unexpected /proc/thread-self"))?
        .to_owned();
    let path = format!("/proc/{tid}/timerslack_ns");
    std::fs::write(&path, "1")?;
    let now = std::fs::read_to_string(&path)?;
    if now.trim() == "1" {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "timer slack is {} ns",
            now.trim()
        )))
    }
}

struct Row {
    name: String,
    /// Sorted lateness samples, µs.
    samples: Vec<f64>,
}

impl Row {
    /// Nearest-rank percentile.
    fn pct(&self, p: f64) -> f64 {
        let n = self.samples.len();
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        self.samples[rank.clamp(1, n) - 1]
    }

    fn max(&self) -> f64 {
        *self.samples.last().expect("at least one sample")
    }
}

/// Runs `waiter` `n` times (after a warm-up) on a fresh thread, optionally
/// with minimal timer slack, and collects the sorted lateness.
fn measure(name: &str, waiter: Waiter, n: usize, min_slack: bool) -> Option<Row> {
    let handle = thread::Builder::new()
        .name("latency-waiter".into())
        .spawn(move || {
            if min_slack {
                if let Err(err) = minimize_own_timer_slack() {
                    eprintln!("skipping the minimal-slack row: {err}");
                    return None;
                }
            }
            let mut rng = Rng::new();
            for _ in 0..WARMUP {
                waiter(rng.timeout());
            }
            let mut samples: Vec<f64> = (0..n).map(|_| waiter(rng.timeout())).collect();
            samples.sort_by(f64::total_cmp);
            Some(samples)
        })
        .expect("spawn the waiter thread");
    let samples = handle.join().expect("waiter thread panicked")?;
    Some(Row {
        name: name.to_owned(),
        samples,
    })
}

/// `count` threads spinning until the returned guard is dropped.
struct Busy {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Busy {
    fn start(count: usize) -> Busy {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..count)
            .map(|i| {
                let stop = stop.clone();
                thread::Builder::new()
                    .name(format!("latency-busy-{i}"))
                    .spawn(move || {
                        let mut x = 0u64;
                        // Relaxed: a stop flag; a late stop only spins longer.
                        while !stop.load(Ordering::Relaxed) {
                            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                        }
                    })
                    .expect("spawn a busy thread")
            })
            .collect();
        Busy { stop, threads }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from)
}

fn main() {
    // `cargo bench` passes `--bench`; without it (`cargo test --benches`, as
    // with criterion's test mode) this is a smoke run, like `--quick`. Other
    // arguments (filters) are ignored.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick") || !args.iter().any(|a| a == "--bench");
    let n = if quick { SAMPLES_QUICK } else { SAMPLES };
    let cores = thread::available_parallelism().map_or(2, |c| c.get());
    let busy_count = 2 * cores;
    let started = Instant::now();

    let idle: [(&str, Waiter, bool); 6] = [
        ("cancelctx wait_done() (plain thread)", wait_done, false),
        ("cancelctx done() (block_on)", done_block_on, false),
        (
            "cancelctx ctx.sleep() cut by deadline (block_on)",
            ctx_sleep_block_on,
            false,
        ),
        (
            "cancelctx Timer::global().sleep_until() (block_on)",
            timer_sleep_until,
            false,
        ),
        ("floor: thread::sleep, default slack", thread_sleep, false),
        ("floor: thread::sleep, slack 1 ns", thread_sleep, true),
    ];
    let mut rows: Vec<Row> = idle
        .iter()
        .filter_map(|&(name, waiter, min_slack)| measure(name, waiter, n, min_slack))
        .collect();
    {
        let _busy = Busy::start(busy_count);
        let busy: [(&str, Waiter); 3] = [
            ("cancelctx wait_done() (plain thread)", wait_done),
            ("cancelctx done() (block_on)", done_block_on),
            ("floor: thread::sleep, default slack", thread_sleep),
        ];
        for (name, waiter) in busy {
            let name = format!("{name}, {busy_count} busy threads");
            rows.extend(measure(&name, waiter, n, false));
        }
    }
    let elapsed = started.elapsed();

    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0);
    println!(
        "wake-up lateness after a deadline 1-3 ms ahead, µs ({n} samples per row, {cores} cores){}",
        if quick { ", --quick" } else { "" }
    );
    println!(
        "{:<width$}  {:>8} {:>8} {:>8} {:>8}",
        "waiter", "p50", "p90", "p99", "max"
    );
    let mut csv = String::from("waiter,samples,p50_us,p90_us,p99_us,max_us\n");
    for r in &rows {
        let (p50, p90, p99, max) = (r.pct(50.0), r.pct(90.0), r.pct(99.0), r.max());
        println!(
            "{:<width$}  {p50:>8.1} {p90:>8.1} {p99:>8.1} {max:>8.1}",
            r.name
        );
        let _ = writeln!(
            csv,
            "\"{}\",{},{p50:.1},{p90:.1},{p99:.1},{max:.1}",
            r.name,
            r.samples.len()
        );
    }
    println!("elapsed: {:.1} s", elapsed.as_secs_f64());

    let dir = target_dir().join("latency");
    let path = dir.join("latency.csv");
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, csv)) {
        Ok(()) => println!("wrote {}", path.display()),
        Err(err) => eprintln!("could not write {}: {err}", path.display()),
    }
}
