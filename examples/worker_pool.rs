//! A pool of plain threads working through a queue until a deadline: no
//! async runtime anywhere. Each worker checks the context between jobs and
//! inside them (CPU-bound work checks `is_done()` every chunk; waits use
//! `sleep_blocking`, which returns as soon as the context ends), so the whole
//! pool stops within moments of the deadline, with most of the queue untouched.
//!
//! Run with `cargo run --example worker_pool`; it also runs under
//! `cargo test --examples`. It checks what it prints.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use cancelctx::{Context, Error};

const WORKERS: usize = 4;
const JOBS: usize = 100_000;
const DEADLINE: Duration = Duration::from_millis(100);

/// How one worker's shift ended.
#[derive(Debug)]
struct Shift {
    worker: usize,
    finished: usize,
    /// A job that was stopped half-way by the deadline.
    interrupted: Option<usize>,
    stopped_at: Instant,
}

/// One job: a short wait (simulated I/O) and some CPU-bound work.
fn job(ctx: &Context, n: usize) -> Result<u64, Error> {
    ctx.sleep_blocking(Duration::from_micros(500))?;
    let mut acc = n as u64;
    for chunk in 0..200u64 {
        if ctx.is_done() {
            return Err(ctx.err().expect("done"));
        }
        for i in 0..1_000u64 {
            acc = std::hint::black_box(acc.wrapping_mul(31).wrapping_add(chunk ^ i));
        }
    }
    Ok(acc)
}

fn main() {
    let started = Instant::now();
    let (ctx, _guard) = Context::background().with_timeout(DEADLINE);
    let next_job = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(Mutex::new(Vec::new()));

    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let ctx = ctx.clone();
            let next_job = next_job.clone();
            let results = results.clone();
            thread::Builder::new()
                .name(format!("worker-{worker}"))
                .spawn(move || {
                    let mut finished = 0;
                    let mut interrupted = None;
                    while !ctx.is_done() {
                        let n = next_job.fetch_add(1, Ordering::Relaxed);
                        if n >= JOBS {
                            break;
                        }
                        match job(&ctx, n) {
                            Ok(value) => {
                                finished += 1;
                                results.lock().unwrap().push(value);
                            }
                            Err(_) => interrupted = Some(n),
                        }
                    }
                    Shift {
                        worker,
                        finished,
                        interrupted,
                        stopped_at: Instant::now(),
                    }
                })
                .expect("spawn a worker")
        })
        .collect();

    let shifts: Vec<Shift> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let deadline = ctx.deadline().expect("a deadline");
    for shift in &shifts {
        println!(
            "worker {} finished {:>4} jobs, interrupted {:?}, stopped {:.1} ms after the deadline",
            shift.worker,
            shift.finished,
            shift.interrupted,
            shift
                .stopped_at
                .saturating_duration_since(deadline)
                .as_secs_f64()
                * 1e3,
        );
    }
    let finished: usize = shifts.iter().map(|s| s.finished).sum();
    println!("{finished} of {JOBS} jobs done by the {DEADLINE:?} deadline");

    // What it shows, checked (bounds leave room for a loaded machine).
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert_eq!(results.lock().unwrap().len(), finished);
    assert!(
        finished > 0 && finished < JOBS,
        "the deadline, not the queue, ended the shift"
    );
    assert!(
        shifts.iter().any(|shift| shift.interrupted.is_some()),
        "the deadline stopped jobs half-way, not only between jobs"
    );
    for shift in &shifts {
        assert!(
            shift.stopped_at >= deadline,
            "never before the deadline: {shift:?}"
        );
        assert!(
            shift.stopped_at < deadline + Duration::from_secs(5),
            "{shift:?}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "took {:?}",
        started.elapsed()
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn worker_pool() {
        super::main();
    }
}
