//! Does schedule + cancel scale across threads?
//!
//! Each worker thread loops `schedule_alarm(now + 1 h)` + `cancel` on the
//! global timer for about 0.5 s, while 40 background entries stay armed
//! (each worker owns its share, deadlines spread over 30 min – 2 h, so the
//! driver parks far away and inserts are ordinary heap work). One rep
//! measures 1 worker, then 2 workers; the report gives ops/s, ns per pair for
//! one thread, and the 2-thread / 1-thread throughput ratio, with medians.
//!
//! With `--background-per-thread`, each worker keeps 40 entries of its own
//! instead (80 in all with 2 workers): on a sharded timer every heap then
//! has the same size in both runs, so the ratio shows contention alone.
//!
//! ```text
//! cargo bench -p cancelctx-timer --bench scaling               # 5 reps
//! cargo bench -p cancelctx-timer --bench scaling -- --reps 9 --background-per-thread
//! ```
//!
//! Without `--bench` (e.g. `cargo test --benches`) it runs one tiny rep as a
//! smoke test. Lines starting with `RESULT` are for scripts.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use cancelctx_timer::{Alarm, Entry, Timer};

/// Live entries kept armed during a measurement, split among the workers
/// (or per worker, with `--background-per-thread`).
const BACKGROUND: usize = 40;

struct Noop;

impl Alarm for Noop {
    fn fire(self: Arc<Self>) {}
}

/// Runs `threads` workers for `run` each, each keeping `background` entries
/// armed; returns the summed ops/s (one op = one schedule + cancel pair).
fn measure(threads: usize, background: usize, run: Duration) -> f64 {
    let barrier = Arc::new(Barrier::new(threads));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || worker(background, run, &barrier))
        })
        .collect();
    workers.into_iter().map(|w| w.join().unwrap()).sum()
}

fn worker(background: usize, run: Duration, barrier: &Barrier) -> f64 {
    let timer = Timer::global();
    // A per-thread alarm: the `Weak` counts touched per op stay thread-local.
    let alarm: Arc<dyn Alarm> = Arc::new(Noop);
    let now = Instant::now();
    let background: Vec<Entry> = (0..background)
        .map(|i| {
            let at = now + Duration::from_secs(1800 + 150 * i as u64);
            timer.schedule_alarm(at, Arc::downgrade(&alarm))
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut ops = 0u64;
    let rate = loop {
        for _ in 0..256 {
            let at = Instant::now() + Duration::from_secs(3600);
            let entry = timer.schedule_alarm(at, Arc::downgrade(&alarm));
            black_box(entry.cancel());
        }
        ops += 256;
        let elapsed = start.elapsed();
        if elapsed >= run {
            break ops as f64 / elapsed.as_secs_f64();
        }
    };
    for entry in background {
        assert!(entry.cancel());
    }
    rate
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".to_owned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench");
    let per_thread = args.iter().any(|a| a == "--background-per-thread");
    // Background entries per worker, with 1 and with 2 workers.
    let (bg1, bg2) = if per_thread {
        (BACKGROUND, BACKGROUND)
    } else {
        (BACKGROUND, BACKGROUND / 2)
    };
    let reps: usize = args
        .iter()
        .position(|a| a == "--reps")
        .and_then(|i| args.get(i + 1))
        .map_or(5, |n| n.parse().expect("--reps N"));
    let (reps, run) = if bench {
        (reps.max(1), Duration::from_millis(500))
    } else {
        (1, Duration::from_millis(20))
    };
    eprintln!(
        "background entries per worker: {bg1} with 1 worker, {bg2} with 2; load average before: {}",
        loadavg()
    );
    // Warm-up: starts the timer thread, grows the slabs, settles frequencies.
    measure(1, bg1, run / 2);
    measure(2, bg2, run / 2);
    let (mut one, mut two, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 1..=reps {
        let a = measure(1, bg1, run);
        let b = measure(2, bg2, run);
        println!(
            "rep {rep}: 1 thread {:6.2} Mops/s ({:5.1} ns/pair), 2 threads {:6.2} Mops/s, ratio {:.2}",
            a / 1e6,
            1e9 / a,
            b / 1e6,
            b / a
        );
        println!("RESULT one={a:.0} two={b:.0}");
        one.push(a);
        two.push(b);
        ratio.push(b / a);
    }
    let (a, b, r) = (median(&mut one), median(&mut two), median(&mut ratio));
    println!(
        "median of {reps}: 1 thread {:.2} Mops/s ({:.1} ns/pair), 2 threads {:.2} Mops/s, ratio {:.2}",
        a / 1e6,
        1e9 / a,
        b / 1e6,
        r
    );
    eprintln!("load average after: {}", loadavg());
}
