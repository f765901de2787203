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
//! `idle` counts threads waiting for a job that no submitter has claimed. A
//! submitter claims an idle thread by decrementing `idle` (never below zero)
//! before sending; a thread that times out retires only if it can decrement
//! `idle` itself, so every claimed job has a thread to run it.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::sync::{AtomicUsize, Mutex, Ordering};

/// How long an idle callback thread waits for work before it retires.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// At most this many callback threads; past it, jobs queue.
pub(crate) const MAX_THREADS: usize = 256;

pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

pub(crate) struct Pool {
    sender: Sender<Job>,
    receiver: Receiver<Job>,
    idle: AtomicUsize,
    threads: AtomicUsize,
    spawned: AtomicUsize,
    panicked: AtomicUsize,
}

impl Pool {
    pub(crate) fn global() -> &'static Pool {
        static POOL: OnceLock<Pool> = OnceLock::new();
        POOL.get_or_init(|| {
            let (sender, receiver) = crossbeam_channel::unbounded();
            Pool {
                sender,
                receiver,
                idle: AtomicUsize::new(0),
                threads: AtomicUsize::new(0),
                spawned: AtomicUsize::new(0),
                panicked: AtomicUsize::new(0),
            }
        })
    }

    /// Runs `job` on a pool thread, soon; never on the caller's.
    pub(crate) fn submit(&'static self, job: Job) {
        // Claim an idle thread if there is one (see # Protocol). AcqRel:
        // the claim orders with the thread's own increment and retirement.
        let claimed = self
            .idle
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        let job = if claimed {
            job
        } else {
            match self.spawn(job) {
                Ok(()) => return,
                Err(job) => job,
            }
        };
        // Unbounded channel: `send` fails only if the receiver is gone, and
        // `self` owns one.
        let _ = self.sender.send(job);
    }

    /// Starts a thread whose first job is `job`; gives `job` back at the
    /// thread limit or if the OS refuses a thread (it then waits in the
    /// queue for a running thread).
    fn spawn(&'static self, job: Job) -> Result<(), Job> {
        // Relaxed: a soft limit; a racing overshoot by one is harmless.
        if self.threads.fetch_add(1, Ordering::Relaxed) >= MAX_THREADS {
            self.threads.fetch_sub(1, Ordering::Relaxed);
            return Err(job);
        }
        // Relaxed: only names threads.
        let n = self.spawned.fetch_add(1, Ordering::Relaxed);
        // The job goes through a cell so a failed spawn can hand it back.
        let cell = Arc::new(Mutex::new(Some(job)));
        let first = cell.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("cancelctx-callback-{n}"))
            .spawn(move || {
                let job = first.lock().take();
                drop(first);
                self.work(job);
            });
        match spawned {
            Ok(_) => Ok(()),
            Err(err) => {
                self.threads.fetch_sub(1, Ordering::Relaxed);
                eprintln!(
                    "cancelctx: could not start a callback thread ({err}); the callback waits for a running one"
                );
                let job = cell.lock().take().expect("the thread never started");
                Err(job)
            }
        }
    }

    fn work(&'static self, mut job: Option<Job>) {
        /// Counts the thread out however it ends (even by a panic that
        /// escaped every guard), so `threads` never counts a dead thread.
        struct Exit(&'static Pool);
        impl Drop for Exit {
            fn drop(&mut self) {
                // Relaxed: a soft limit and a statistic.
                self.0.threads.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let _exit = Exit(self);
        loop {
            if let Some(job) = job.take() {
                self.run(job);
            }
            // AcqRel: see # Protocol.
            self.idle.fetch_add(1, Ordering::AcqRel);
            match self.receiver.recv_timeout(KEEP_ALIVE) {
                Ok(next) => job = Some(next),
                Err(RecvTimeoutError::Timeout) => {
                    let retired = self
                        .idle
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                        .is_ok();
                    if retired {
                        return;
                    }
                    // A submitter claimed us: its job is on the way.
                    job = self.receiver.recv().ok();
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn run(&self, job: Job) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(job)) {
            // Relaxed: a statistic.
            self.panicked.fetch_add(1, Ordering::Relaxed);
            eprintln!(
                "cancelctx: an after_func callback panicked: {}",
                panic_message(&*payload)
            );
            // The payload is user data too: a panic in its `Drop` must not
            // take the thread down.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
        }
    }

    /// Callbacks that panicked so far.
    pub(crate) fn panicked(&self) -> usize {
        // Relaxed: a statistic.
        self.panicked.load(Ordering::Relaxed)
    }

    /// Callback threads alive now.
    pub(crate) fn threads(&self) -> usize {
        // Relaxed: a statistic.
        self.threads.load(Ordering::Relaxed)
    }
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
