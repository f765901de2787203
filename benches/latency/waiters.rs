//! The waiters, the executors they run on, and the load generators.
//!
//! A waiter takes one timeout, waits until the deadline it implies, and
//! returns its lateness in µs. Context waiters measure against
//! `ctx.deadline()`; the others against `Instant::now() + timeout` read just
//! before the timer is created (a few ns early, which overstates their
//! lateness by as much).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use cancelctx::timer::Timer;
use cancelctx::{CancelGuard, Context};

use super::CAP;

/// The timeouts of one row: `warmup` ones whose lateness is dropped, then
/// `timeouts`.
pub(crate) struct Plan {
    pub(crate) warmup: Vec<Duration>,
    pub(crate) timeouts: Vec<Duration>,
}

impl Plan {
    /// `n` recorded and `warmup` unrecorded timeouts, uniform in [1 ms, 3 ms)
    /// (xorshift64*, seeded per row so a run is reproducible).
    pub(crate) fn new(n: usize, warmup: usize, seed: u64) -> Plan {
        let mut state = (seed.wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let x = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
            Duration::from_micros(1_000 + x % 2_000)
        };
        Plan {
            warmup: (0..warmup).map(|_| next()).collect(),
            timeouts: (0..n).map(|_| next()).collect(),
        }
    }
}

/// µs from `deadline` to now: negative if the waiter ran before its deadline
/// (counted and reported as early, never clipped to zero).
pub(crate) fn lateness_us(deadline: Instant) -> f64 {
    let now = Instant::now();
    match now.checked_duration_since(deadline) {
        Some(late) => late.as_secs_f64() * 1e6,
        None => -(deadline - now).as_secs_f64() * 1e6,
    }
}

// ---------------------------------------------------------------------------
// Blocking waiters (run on the row's own thread).

/// Runs a blocking waiter over the plan on the calling thread.
pub(crate) fn blocking(plan: &Plan, waiter: fn(Duration) -> f64) -> Result<Vec<f64>, String> {
    for &t in &plan.warmup {
        waiter(t);
    }
    Ok(plan.timeouts.iter().map(|&t| waiter(t)).collect())
}

pub(crate) fn wait_done(timeout: Duration) -> f64 {
    let (ctx, _guard) = Context::background().with_timeout(timeout);
    let deadline = ctx.deadline().expect("with_timeout sets a deadline");
    ctx.wait_done();
    lateness_us(deadline)
}

pub(crate) fn thread_sleep(timeout: Duration) -> f64 {
    let deadline = Instant::now() + timeout;
    sleep_until(deadline);
    lateness_us(deadline)
}

/// `thread::sleep` until `deadline` (never early).
fn sleep_until(deadline: Instant) {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        thread::sleep(deadline - now);
    }
}

/// Sets the calling thread's timer slack to 1 ns without `unsafe`: writes
/// `/proc/<tid>/timerslack_ns`, the tid read from `/proc/thread-self`.
/// (cancelctx's timer thread does the same with `prctl(PR_SET_TIMERSLACK)`.)
pub(crate) fn minimize_own_timer_slack() -> Result<(), String> {
    let link =
        std::fs::read_link("/proc/thread-self").map_err(|e| format!("/proc/thread-self: {e}"))?;
    let tid = link
        .file_name()
        .and_then(|t| t.to_str())
        .ok_or("unexpected /proc/thread-self")?
        .to_owned();
    let path = format!("/proc/{tid}/timerslack_ns");
    std::fs::write(&path, "1").map_err(|e| format!("{path}: {e}"))?;
    let now = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    if now.trim() == "1" {
        Ok(())
    } else {
        Err(format!("timer slack stayed at {} ns", now.trim()))
    }
}

// ---------------------------------------------------------------------------
// Async waiters (one future per sample).

pub(crate) async fn ctx_done(timeout: Duration) -> f64 {
    let (ctx, _guard) = Context::background().with_timeout(timeout);
    let deadline = ctx.deadline().expect("with_timeout sets a deadline");
    ctx.done().await;
    lateness_us(deadline)
}

pub(crate) async fn ctx_sleep(timeout: Duration) -> f64 {
    let (ctx, _guard) = Context::background().with_timeout(timeout);
    let deadline = ctx.deadline().expect("with_timeout sets a deadline");
    let slept = ctx.sleep(Duration::from_secs(3600)).await;
    assert!(slept.is_err(), "the context's deadline ends the sleep");
    lateness_us(deadline)
}

pub(crate) async fn timer_sleep_until(timeout: Duration) -> f64 {
    let deadline = Instant::now() + timeout;
    Timer::global().sleep_until(deadline).await;
    lateness_us(deadline)
}

/// A private timer whose thread runs under `SCHED_FIFO` (made once), or why
/// the OS refused it.
pub(crate) fn realtime_timer() -> Result<&'static Timer, String> {
    static TIMER: OnceLock<Result<Timer, String>> = OnceLock::new();
    TIMER
        .get_or_init(|| {
            Timer::try_with_realtime_priority(10)
                .map_err(|e| format!("real-time priority refused: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

pub(crate) async fn realtime_timer_sleep_until(timeout: Duration) -> f64 {
    let deadline = Instant::now() + timeout;
    let timer = realtime_timer().expect("the row checks it first");
    timer.sleep_until(deadline).await;
    lateness_us(deadline)
}

pub(crate) async fn tokio_sleep_until(timeout: Duration) -> f64 {
    let deadline = Instant::now() + timeout;
    tokio::time::sleep_until(deadline.into()).await;
    lateness_us(deadline)
}

pub(crate) async fn async_io_timer(timeout: Duration) -> f64 {
    let deadline = Instant::now() + timeout;
    async_io::Timer::at(deadline).await;
    lateness_us(deadline)
}

pub(crate) async fn async_std_sleep(timeout: Duration) -> f64 {
    let deadline = Instant::now() + timeout;
    async_std::task::sleep(timeout).await;
    lateness_us(deadline)
}

pub(crate) async fn futures_timer_delay(timeout: Duration) -> f64 {
    let deadline = Instant::now() + timeout;
    futures_timer::Delay::new(timeout).await;
    lateness_us(deadline)
}

// ---------------------------------------------------------------------------
// Executors.

/// Where an async waiter's sample loop runs.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Exec {
    /// `Builder::new_current_thread().build()`: no time driver.
    TokioCurrent,
    /// `new_multi_thread().worker_threads(2).build()`, loop spawned onto a
    /// worker: no time driver.
    TokioMulti,
    /// As `TokioCurrent`, with `enable_time()`.
    TokioCurrentTime,
    /// As `TokioMulti`, with `enable_time()`.
    TokioMultiTime,
    /// `smol::block_on` (async-io's: this thread also drives the reactor).
    Smol,
    /// `async_std::task::spawn` onto async-std's executor threads.
    AsyncStd,
    /// `futures::executor::block_on`.
    Futures,
    /// `async_io::block_on`.
    AsyncIo,
}

fn tokio_rt(multi: bool, time: bool) -> Result<tokio::runtime::Runtime, String> {
    let mut builder = if multi {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    if time {
        builder.enable_time();
    }
    builder.build().map_err(|e| format!("tokio runtime: {e}"))
}

/// Runs `waiter` over the plan, one sample after the other, in one task on
/// `exec`.
pub(crate) fn on<W, F>(exec: Exec, plan: &Plan, waiter: W) -> Result<Vec<f64>, String>
where
    W: Fn(Duration) -> F + Send + 'static,
    F: Future<Output = f64> + Send,
{
    let warmup = plan.warmup.clone();
    let timeouts = plan.timeouts.clone();
    let task = async move {
        for t in warmup {
            waiter(t).await;
        }
        let mut out = Vec::with_capacity(timeouts.len());
        for t in timeouts {
            out.push(waiter(t).await);
        }
        out
    };
    match exec {
        Exec::TokioCurrent | Exec::TokioCurrentTime => {
            Ok(tokio_rt(false, matches!(exec, Exec::TokioCurrentTime))?.block_on(task))
        }
        Exec::TokioMulti | Exec::TokioMultiTime => {
            let rt = tokio_rt(true, matches!(exec, Exec::TokioMultiTime))?;
            rt.block_on(rt.spawn(task))
                .map_err(|e| format!("task: {e}"))
        }
        Exec::Smol => Ok(smol::block_on(task)),
        Exec::AsyncStd => Ok(async_std::task::block_on(async_std::task::spawn(task))),
        Exec::Futures => Ok(futures::executor::block_on(task)),
        Exec::AsyncIo => Ok(async_io::block_on(task)),
    }
}

// ---------------------------------------------------------------------------
// CPU-bound: every worker of a 2-worker tokio runtime spins.

/// Workers of the CPU-bound runtime, and spinners per sample.
const SPINNERS: usize = 2;

/// Spins until `seen()` or until [`CAP`] after `deadline`; the lateness, or
/// `INFINITY` if capped. Counts a spinner that only started after the
/// deadline (its sample would not measure a spinning worker).
fn spin_until(deadline: Instant, late_starts: &AtomicUsize, mut seen: impl FnMut() -> bool) -> f64 {
    if Instant::now() >= deadline {
        late_starts.fetch_add(1, Ordering::Relaxed);
    }
    let give_up = deadline + CAP;
    loop {
        if seen() {
            return lateness_us(deadline);
        }
        if Instant::now() >= give_up {
            return f64::INFINITY;
        }
    }
}

/// Where the spinners of one sample meet: each announces itself, the last
/// to arrive publishes the sample's context (or deadline), and all spin until
/// it is there. So every worker is busy before the clock starts, and no
/// third thread is running then: the thread that drives the sample is
/// already blocked waiting for the spinners' results.
struct Rendezvous<T> {
    ready: AtomicUsize,
    publish: Mutex<Option<Publish<T>>>,
    value: OnceLock<T>,
}

/// Makes what a sample's spinners spin on.
type Publish<T> = Box<dyn FnOnce() -> T + Send>;

impl<T> Rendezvous<T> {
    async fn arrive(&self) -> &T {
        if self.ready.fetch_add(1, Ordering::AcqRel) + 1 == SPINNERS {
            let publish = self.publish.lock().ok().and_then(|mut p| p.take());
            if let Some(publish) = publish {
                let _ = self.value.set(publish());
            }
        }
        let mut spins = 0u32;
        loop {
            if let Some(v) = self.value.get() {
                return v;
            }
            spins += 1;
            if spins % 1_000_000 == 0 {
                // Milliseconds without the value: tokio may have queued both
                // spinners on this worker while the other sleeps (it is woken
                // to steal only now and then), and a spinner that never
                // yields would wait forever for the one queued behind it
                // (seen once in ~10 000 samples). Yielding only then keeps the
                // normal case a plain spin on every worker.
                tokio::task::yield_now().await;
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// One sample: [`SPINNERS`] tasks start spinning; the last of them to run
/// calls `publish`, which creates what they spin on; the worst lateness
/// among them.
fn spin_sample<T, F>(
    rt: &tokio::runtime::Runtime,
    publish: impl FnOnce() -> T + Send + 'static,
    spinner: impl Fn(Arc<Rendezvous<T>>) -> F,
) -> Result<f64, String>
where
    T: Send + Sync + 'static,
    F: Future<Output = f64> + Send + 'static,
{
    let meet = Arc::new(Rendezvous {
        ready: AtomicUsize::new(0),
        publish: Mutex::new(Some(Box::new(publish))),
        value: OnceLock::new(),
    });
    rt.block_on(async {
        let handles: Vec<_> = (0..SPINNERS)
            .map(|_| tokio::spawn(spinner(Arc::clone(&meet))))
            .collect();
        // From -inf, not 0: a sample whose spinners all saw the deadline
        // before it is early (negative), and must stay so to be counted.
        let mut worst = f64::NEG_INFINITY;
        for h in handles {
            worst = worst.max(h.await.map_err(|e| format!("spinner: {e}"))?);
        }
        Ok(worst)
    })
}

fn spin_row(
    plan: &Plan,
    time_driver: bool,
    sample: impl Fn(&tokio::runtime::Runtime, Duration, &Arc<AtomicUsize>) -> Result<f64, String>,
) -> Result<Vec<f64>, String> {
    let rt = tokio_rt(true, time_driver)?;
    let late_starts = Arc::new(AtomicUsize::new(0));
    for &t in &plan.warmup {
        sample(&rt, t, &late_starts)?;
    }
    late_starts.store(0, Ordering::Relaxed);
    let out = plan
        .timeouts
        .iter()
        .map(|&t| sample(&rt, t, &late_starts))
        .collect::<Result<Vec<f64>, String>>()?;
    let late = late_starts.load(Ordering::Relaxed);
    if late > 0 {
        eprint!("({late} spinners saw their deadline pass before they started) ");
    }
    Ok(out)
}

/// cancelctx: the workers spin on `ctx.is_done()` (runtime without the time
/// driver).
pub(crate) fn spin_is_done(plan: &Plan) -> Result<Vec<f64>, String> {
    spin_row(plan, false, |rt, timeout, late_starts| {
        let publish = move || Context::background().with_timeout(timeout);
        spin_sample(
            rt,
            publish,
            |meet: Arc<Rendezvous<(Context, CancelGuard)>>| {
                let late_starts = Arc::clone(late_starts);
                async move {
                    let (ctx, _guard) = meet.arrive().await;
                    let deadline = ctx.deadline().expect("with_timeout sets a deadline");
                    spin_until(deadline, &late_starts, || ctx.is_done())
                }
            },
        )
    })
}

/// The condition's floor: the timer thread's job done by a bare thread. A
/// long-lived thread with a 1 ns timer slack (as the timer thread has) waits
/// for each sample's deadline on a channel, sleeps until it and sets a flag
/// the workers spin on. Nothing can make `is_done()` flip sooner without
/// spinning a thread of its own: the flip waits for a sleeping thread to
/// preempt a spinning worker.
pub(crate) fn spin_floor(plan: &Plan) -> Result<Vec<f64>, String> {
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, Arc<AtomicBool>)>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let sleeper = thread::Builder::new()
        .name("latency-floor-sleeper".to_owned())
        .spawn(move || {
            let _ = ready_tx.send(minimize_own_timer_slack());
            for (deadline, flag) in rx {
                sleep_until(deadline);
                flag.store(true, Ordering::Release);
            }
        })
        .map_err(|e| format!("spawn the sleeper: {e}"))?;
    ready_rx
        .recv()
        .map_err(|_| "the sleeper exited".to_owned())??;
    let out = spin_row(plan, false, |rt, timeout, late_starts| {
        let tx = tx.clone();
        let publish = move || {
            let deadline = Instant::now() + timeout;
            let flag = Arc::new(AtomicBool::new(false));
            let _ = tx.send((deadline, Arc::clone(&flag)));
            (deadline, flag)
        };
        spin_sample(
            rt,
            publish,
            |meet: Arc<Rendezvous<(Instant, Arc<AtomicBool>)>>| {
                let late_starts = Arc::clone(late_starts);
                async move {
                    let (deadline, flag) = meet.arrive().await;
                    spin_until(*deadline, &late_starts, || flag.load(Ordering::Acquire))
                }
            },
        )
    });
    drop(tx);
    let _ = sleeper.join();
    out
}

/// The condition's lowest floor: each worker reads the clock itself, and no
/// thread sleeps toward the deadline, so nothing wakes at it to take a
/// worker's CPU. What is left is what the machine does to a spinning thread
/// (interrupts, the host's own work). A design in which anything wakes at
/// the deadline, a timer thread included, can only add to it.
pub(crate) fn spin_clock(plan: &Plan) -> Result<Vec<f64>, String> {
    spin_on_deadline(plan, false, |deadline| async move {
        move || Instant::now() >= deadline
    })
}

/// tokio: each worker spins on `is_elapsed()` of its own `Sleep`, polled
/// once first so that it is registered with the time driver.
pub(crate) fn spin_tokio_is_elapsed(plan: &Plan) -> Result<Vec<f64>, String> {
    spin_on_deadline(plan, true, |deadline| async move {
        let mut sleep = Box::pin(tokio::time::sleep_until(deadline.into()));
        let _ = futures::poll!(sleep.as_mut());
        move || sleep.is_elapsed()
    })
}

/// A CPU-bound row whose spinners get only the deadline: `check` makes, on
/// the spinner's worker, what it spins on.
fn spin_on_deadline<C, F>(
    plan: &Plan,
    time_driver: bool,
    check: impl Fn(Instant) -> C + Clone + Send + 'static,
) -> Result<Vec<f64>, String>
where
    C: Future<Output = F> + Send,
    F: FnMut() -> bool + Send,
{
    spin_row(plan, time_driver, |rt, timeout, late_starts| {
        let publish = move || Instant::now() + timeout;
        spin_sample(rt, publish, |meet: Arc<Rendezvous<Instant>>| {
            let late_starts = Arc::clone(late_starts);
            let check = check.clone();
            async move {
                let deadline = *meet.arrive().await;
                let seen = check(deadline).await;
                spin_until(deadline, &late_starts, seen)
            }
        })
    })
}

// ---------------------------------------------------------------------------
// Saturation.

/// `count` threads spinning until dropped.
pub(crate) struct Busy {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Busy {
    pub(crate) fn start(count: usize) -> Busy {
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

// Run with `cargo rustc --profile bench --bench latency -- --test` and the
// binary it builds: `harness = false` keeps `cargo test` from running them,
// and the bench build compiles this module without its `#[test]`s.
#[cfg(test)]
#[allow(dead_code)]
mod tests {
    use super::*;

    /// One sample of a CPU-bound row whose spinners return `values` (one
    /// each), through the real rendezvous and `spin_sample`.
    fn sample_of(values: [f64; SPINNERS]) -> f64 {
        let rt = tokio_rt(true, false).unwrap();
        let next = Arc::new(AtomicUsize::new(0));
        spin_sample(
            &rt,
            || (),
            move |meet: Arc<Rendezvous<()>>| {
                let next = Arc::clone(&next);
                async move {
                    meet.arrive().await;
                    values[next.fetch_add(1, Ordering::Relaxed)]
                }
            },
        )
        .unwrap()
    }

    #[test]
    fn a_cpu_bound_sample_is_the_last_spinner_to_see_the_deadline() {
        assert_eq!(sample_of([12.5, 40.0]), 40.0);
        assert!(sample_of([12.5, f64::INFINITY]).is_infinite());
    }

    /// "A waiter that ran before its deadline is recorded as negative
    /// lateness, never clipped" (docs/benchmarks.md): spinners that both saw
    /// the context done before its deadline make an early sample, which the
    /// "never early" goal line must be able to count.
    #[test]
    fn an_early_cpu_bound_sample_is_not_clipped_to_zero() {
        assert_eq!(sample_of([-7.0, -3.0]), -3.0);
    }

    #[test]
    fn plans_draw_whole_microseconds_from_1_to_3_ms() {
        let plan = Plan::new(400, 10, 3);
        assert_eq!((plan.warmup.len(), plan.timeouts.len()), (10, 400));
        for t in plan.warmup.iter().chain(&plan.timeouts) {
            assert!((Duration::from_millis(1)..Duration::from_millis(3)).contains(t));
            assert_eq!(t.subsec_nanos() % 1_000, 0, "{t:?}");
        }
    }
}
