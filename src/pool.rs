//! The callback pool: where `after_func` callbacks run.
//!
//! A canceller (any thread, or the timer thread) never runs a callback
//! inline and never waits for one: it hands the job to this pool. Threads
//! (`cancelctx-callback-N`) start lazily, one more whenever a job arrives and
//! no thread is idle, up to [`MAX_THREADS`]; a thread idle for
//! [`KEEP_ALIVE`] retires. A callback that blocks forever therefore costs one
//! thread and delays nobody else. A panicking callback is caught, counted and
//! reported on stderr; its thread lives on.
//!
//! # Protocol
//!
//! One lock guards the queue of jobs and the counts of threads alive and
//! idle (waiting on the condition variable). A submitter queues its job and
//! wakes an idle thread if there are at least as many idle threads as queued
//! jobs, and starts a thread otherwise (below the limit; at it, the job waits
//! for a running thread to finish). A thread takes the next queued job before
//! it waits, and retires only when its wait timed out with the queue empty,
//! under the same lock: so a queued job always has a thread coming for it.
//! (Counting idle threads outside the lock let a job queued at the limit
//! leave the count one too high for good, after which a callback could be
//! handed to a thread that no longer existed.)
//!
//! If the OS refuses a thread, the job waits for a running one, and a retry
//! is scheduled on the timer thread (10 ms, doubling to 1 s while refusals
//! go on): with no pool thread left, nothing else would start one.

use std::any::Any;
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;
use std::time::Duration;

use crate::sync::{AtomicUsize, Condvar, Mutex, Ordering};

/// How long an idle callback thread waits for work before it retires.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// At most this many callback threads; past it, jobs queue.
pub(crate) const MAX_THREADS: usize = 256;

pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// Starts a named thread running the body (tests inject refusals).
type Spawner = fn(String, Box<dyn FnOnce() + Send + 'static>) -> std::io::Result<()>;

/// The first wait before retrying a thread the OS refused, doubled on each
/// refusal in a row up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(10);
const MAX_RETRY: Duration = Duration::from_secs(1);

pub(crate) struct Pool {
    state: Mutex<State>,
    /// Idle threads wait here for a job.
    queued: Condvar,
    max_threads: usize,
    keep_alive: Duration,
    spawner: Spawner,
    spawned: AtomicUsize,
    panicked: AtomicUsize,
}

struct State {
    jobs: VecDeque<Job>,
    /// Threads alive.
    threads: usize,
    /// Threads waiting on `queued`.
    idle: usize,
    /// A retry of a refused thread start is scheduled.
    retry_pending: bool,
    /// How long the next retry waits.
    retry_after: Duration,
}

impl Pool {
    pub(crate) fn global() -> &'static Pool {
        static POOL: OnceLock<Pool> = OnceLock::new();
        POOL.get_or_init(|| Pool::new(MAX_THREADS, KEEP_ALIVE))
    }

    fn new(max_threads: usize, keep_alive: Duration) -> Pool {
        Pool {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                threads: 0,
                idle: 0,
                retry_pending: false,
                retry_after: FIRST_RETRY,
            }),
            queued: Condvar::new(),
            max_threads,
            keep_alive,
            spawner: spawn_std,
            spawned: AtomicUsize::new(0),
            panicked: AtomicUsize::new(0),
        }
    }

    /// Runs `job` on a pool thread, soon; never on the caller's.
    pub(crate) fn submit(&'static self, job: Job) {
        let mut state = self.state.lock();
        state.jobs.push_back(job);
        if state.jobs.len() <= state.idle {
            self.queued.notify_one();
            return;
        }
        if state.threads >= self.max_threads {
            return; // a running thread takes it when it is done
        }
        state.threads += 1;
        drop(state);
        self.spawn();
    }

    /// Starts a thread, already counted in `threads`; it takes the next
    /// queued job. If the OS refuses, the job waits for a running thread, and
    /// a retry is scheduled on the timer thread (with a backoff), so it does
    /// not wait forever when no pool thread is left.
    fn spawn(&'static self) {
        // Relaxed: only names threads.
        let n = self.spawned.fetch_add(1, Ordering::Relaxed);
        let spawned = (self.spawner)(
            format!("cancelctx-callback-{n}"),
            Box::new(move || self.work()),
        );
        let mut state = self.state.lock();
        let Err(err) = spawned else {
            state.retry_after = FIRST_RETRY;
            return;
        };
        state.threads -= 1;
        if state.retry_pending {
            return;
        }
        state.retry_pending = true;
        let after = state.retry_after;
        state.retry_after = (after * 2).min(MAX_RETRY);
        drop(state);
        report(format_args!(
            "cancelctx: could not start a callback thread ({err}); the callback waits for a running one, or a retry in {after:?}"
        ));
        // The timer's first schedule may itself need a thread, and panics if
        // the OS refuses it: then no retry is possible, only later submits.
        let at = std::time::Instant::now() + after;
        let scheduled = catch_unwind(AssertUnwindSafe(|| {
            cancelctx_timer::Timer::global().schedule(at, move || self.retry())
        }));
        if scheduled.is_err() {
            self.state.lock().retry_pending = false;
        }
    }

    /// Starts the thread a refused start owed, if queued jobs still need it.
    fn retry(&'static self) {
        let mut state = self.state.lock();
        state.retry_pending = false;
        if state.jobs.len() <= state.idle || state.threads >= self.max_threads {
            return;
        }
        state.threads += 1;
        drop(state);
        self.spawn();
    }

    fn work(&'static self) {
        /// Counts the thread out if it ends other than by retiring (a panic
        /// that escaped every guard), so `threads` never counts a dead one.
        struct Exit(&'static Pool);
        impl Drop for Exit {
            fn drop(&mut self) {
                self.0.state.lock().threads -= 1;
            }
        }
        let exit = Exit(self);
        let mut state = self.state.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                drop(state);
                self.run(job);
                state = self.state.lock();
                continue;
            }
            state.idle += 1;
            let timed_out;
            (state, timed_out) = self.queued.wait_for(state, self.keep_alive);
            state.idle -= 1;
            if timed_out && state.jobs.is_empty() {
                state.threads -= 1;
                std::mem::forget(exit);
                return;
            }
        }
    }

    fn run(&self, job: Job) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(job)) {
            // Relaxed: a statistic.
            self.panicked.fetch_add(1, Ordering::Relaxed);
            contain_panic("an after_func callback", payload);
        }
    }

    /// Callbacks that panicked so far.
    pub(crate) fn panicked(&self) -> usize {
        // Relaxed: a statistic.
        self.panicked.load(Ordering::Relaxed)
    }

    /// Callback threads alive now.
    pub(crate) fn threads(&self) -> usize {
        self.state.lock().threads
    }
}

/// Runs `f`, user code that must not unwind into the caller, and contains
/// its panic ([`contain_panic`]).
pub(crate) fn run_contained(what: &str, f: impl FnOnce()) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
        contain_panic(what, payload);
    }
}

/// Reports a panic caught in user code (`what` ran it) on stderr and drops
/// its payload, which is user data too: a panic in the payload's `Drop`, or
/// in that panic's payload's, and so on for a few rounds, is contained as
/// well (then the payload is forgotten).
pub(crate) fn contain_panic(what: &str, payload: Box<dyn Any + Send>) {
    report(format_args!(
        "cancelctx: {what} panicked: {}",
        panic_message(&*payload)
    ));
    let mut payload = payload;
    for _ in 0..4 {
        match catch_unwind(AssertUnwindSafe(move || drop(payload))) {
            Ok(()) => return,
            Err(next) => payload = next,
        }
    }
    std::mem::forget(payload);
}

/// The real [`Spawner`].
fn spawn_std(name: String, body: Box<dyn FnOnce() + Send + 'static>) -> std::io::Result<()> {
    std::thread::Builder::new().name(name).spawn(body).map(drop)
}

/// Writes a line to stderr as `eprintln!` does, but never panics: a closed
/// stderr must not stop a cancel (which submits) or kill a pool thread.
fn report(message: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{message}");
}

pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "<non-string panic payload>"
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Instant;

    use super::*;

    const PATIENCE: Duration = Duration::from_secs(10);

    /// A pool of its own, with a small limit.
    fn pool(max_threads: usize, keep_alive: Duration) -> &'static Pool {
        Box::leak(Box::new(Pool::new(max_threads, keep_alive)))
    }

    fn spawned(pool: &Pool) -> usize {
        pool.spawned.load(Ordering::Relaxed)
    }

    fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(start.elapsed() < PATIENCE, "{what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A job queued at the thread limit, then every thread retired: a later
    /// job still gets a thread. (Observed before the pool kept its counts
    /// under its lock: the later job was handed to a thread that was gone.)
    #[test]
    fn regression_a_job_queued_at_the_limit_leaves_no_phantom_idle_thread() {
        let pool = pool(1, Duration::from_millis(50));
        let (release, gate) = mpsc::channel::<()>();
        let (ran, done) = mpsc::channel();
        let first = ran.clone();
        pool.submit(Box::new(move || {
            gate.recv().unwrap();
            first.send("blocked").unwrap();
        }));
        let queued = ran.clone();
        pool.submit(Box::new(move || queued.send("queued").unwrap()));
        assert_eq!(pool.threads(), 1, "at its limit");
        release.send(()).unwrap();
        assert_eq!(done.recv_timeout(PATIENCE), Ok("blocked"));
        assert_eq!(done.recv_timeout(PATIENCE), Ok("queued"));
        eventually("the thread retires", || pool.threads() == 0);
        pool.submit(Box::new(move || ran.send("later").unwrap()));
        assert_eq!(done.recv_timeout(PATIENCE), Ok("later"));
    }

    /// A blocked job delays nobody: the next one gets a thread of its own;
    /// an idle thread is reused rather than a new one started.
    #[test]
    fn a_blocked_job_delays_nobody_and_idle_threads_are_reused() {
        let pool = pool(4, PATIENCE);
        let (release, gate) = mpsc::channel::<()>();
        pool.submit(Box::new(move || gate.recv().unwrap()));
        let (ran, done) = mpsc::channel();
        for n in 0..3 {
            let ran = ran.clone();
            pool.submit(Box::new(move || ran.send(n).unwrap()));
            assert_eq!(done.recv_timeout(PATIENCE), Ok(n));
            eventually("the thread waits again", || pool.state.lock().idle == 1);
        }
        assert_eq!(spawned(pool), 2, "one blocked, one reused three times");
        release.send(()).unwrap();
    }

    /// A panicking callback is counted, and its thread runs the next one.
    #[test]
    fn a_panicking_job_is_counted_and_its_thread_lives_on() {
        let pool = pool(1, PATIENCE);
        pool.submit(Box::new(|| panic!("callback panics")));
        let (ran, done) = mpsc::channel();
        pool.submit(Box::new(move || ran.send(()).unwrap()));
        assert_eq!(done.recv_timeout(PATIENCE), Ok(()));
        assert_eq!((pool.panicked(), spawned(pool)), (1, 1));
    }

    static REFUSALS: AtomicUsize = AtomicUsize::new(0);

    /// Refuses the next [`REFUSALS`] thread starts.
    fn refusing(name: String, body: Box<dyn FnOnce() + Send + 'static>) -> std::io::Result<()> {
        if REFUSALS
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(std::io::Error::other("injected refusal"));
        }
        spawn_std(name, body)
    }

    /// The OS refuses the thread a job needs while no pool thread is alive:
    /// the job still runs, once a retry (here the second) gets a thread.
    /// (Observed before the retries: it waited for a later submit, forever.)
    #[test]
    fn regression_a_refused_thread_is_retried_when_none_is_left() {
        REFUSALS.store(2, Ordering::SeqCst);
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            spawner: refusing,
            ..Pool::new(4, PATIENCE)
        }));
        let (ran, done) = mpsc::channel();
        pool.submit(Box::new(move || ran.send(()).unwrap()));
        assert_eq!(done.recv_timeout(PATIENCE), Ok(()));
        assert_eq!(REFUSALS.load(Ordering::SeqCst), 0);
        assert_eq!(spawned(pool), 3, "refused, refused again, started");
        assert!(!pool.state.lock().retry_pending);
    }

    /// A payload whose `Drop` panics with a payload whose `Drop` panics
    /// does not end the thread: the job queued behind it at the thread
    /// limit still runs.
    #[test]
    fn regression_nested_panicking_payloads_do_not_end_the_thread() {
        struct Bomb(u32);
        impl Drop for Bomb {
            fn drop(&mut self) {
                if self.0 > 0 {
                    std::panic::panic_any(Bomb(self.0 - 1));
                }
            }
        }
        let pool = pool(1, PATIENCE);
        pool.submit(Box::new(|| std::panic::panic_any(Bomb(2))));
        let (ran, done) = mpsc::channel();
        pool.submit(Box::new(move || ran.send(()).unwrap()));
        assert_eq!(done.recv_timeout(PATIENCE), Ok(()));
        assert_eq!(spawned(pool), 1);
    }
}
