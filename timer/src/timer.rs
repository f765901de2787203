//! The public handle: scheduling, firing, introspection.

use std::fmt;
use std::time::{Duration, Instant};

use crate::callback::{Alarm, Callback};
use crate::driver;
use crate::entry::Entry;
use crate::queue::Key;
use crate::shared::{Mode, Shared};
use crate::sleep::Sleep;
use crate::stats::Stats;
use crate::sync::{AlarmWeak, Arc};

/// A handle to one timer: a min-heap of deadlines and (unless
/// [manual](Timer::manual)) the one thread named `cancelctx-timer` that fires
/// them.
///
/// Cheap to clone (an `Arc` inside); all clones drive the same timer. `Timer`
/// is `Send + Sync`.
///
/// # Thread lifetime
///
/// * [`Timer::global`]'s thread starts on the first schedule and lives for
///   the rest of the process.
/// * [`Timer::new`]'s thread starts on the first schedule, [`Timer::try_new`]'s
///   at once. It exits once every `Timer` handle *and* every [`Entry`] and
///   [`Sleep`] of that timer have been dropped (entries hold a handle); entries
///   still scheduled then are dropped without running. A scheduled closure
///   that itself owns a handle of its timer keeps the thread alive until it
///   fires.
/// * [`Timer::manual`] never has a thread.
///
/// # Precision
///
/// Entries never fire early: an entry fires only once the clock, read after
/// the thread wakes, is at or past its deadline. The thread waits on a
/// condition variable with a timeout at the earliest deadline, and on Linux it
/// sets its timer slack to 1 ns, so on an idle machine entries typically fire
/// within tens of microseconds of their deadline. On a loaded machine the
/// lateness is whatever the OS scheduler adds; [`Stats::worst_lateness`]
/// reports the worst seen.
///
/// # Order
///
/// Entries fire in deadline order. Among equal deadlines, entries scheduled
/// from one thread fire in the order they were scheduled (FIFO; the one
/// exception: two entries due at the very same nanosecond whose schedules
/// straddle a wrap of their shard's 32-bit insert counter, once every 2^32
/// schedules there, may swap). A threaded
/// timer keeps its entries in a few shards, one per scheduling thread, so
/// that threads scheduling and canceling at once do not contend; equal
/// deadlines scheduled from *different* threads then fire in an unspecified
/// order. A [manual](Timer::manual) timer has a single shard: FIFO holds
/// across threads too.
///
/// # Callbacks
///
/// Callbacks run one at a time on the timer thread, never while one of the
/// timer's locks is held, so they may schedule and cancel entries of the same timer.
/// They should be short and must not block: every later entry waits while one
/// runs. A panicking callback is caught, counted in [`Stats::panicked`], and
/// the thread carries on (with `panic = "abort"`, the process aborts instead).
#[derive(Clone)]
pub struct Timer {
    handle: Arc<Handle>,
}

/// The part shared by all clones; its drop means "no more handles".
struct Handle {
    shared: Arc<Shared>,
    /// Fixed at creation: `Mode::Manual` never changes.
    manual: bool,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.shutdown();
    }
}

impl fmt::Debug for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timer")
            .field("manual", &self.handle.manual)
            .finish_non_exhaustive()
    }
}

impl Default for Timer {
    /// Same as [`Timer::new`].
    fn default() -> Self {
        Self::new()
    }
}

/// The process-wide timer behind [`Timer::global`].
#[cfg(not(loom))]
static GLOBAL: std::sync::OnceLock<Timer> = std::sync::OnceLock::new();

/// How an [`Entry`] refers to its timer, in one pointer: `None` is the
/// global timer (no reference count to touch, so threads creating and
/// canceling entries share no counter), `Some` a handle of any other.
#[derive(Clone)]
pub(crate) struct TimerRef(Option<Timer>);

impl TimerRef {
    pub(crate) fn get(&self) -> &Timer {
        match &self.0 {
            Some(timer) => timer,
            // Only made once `GLOBAL` is set (`entry_ref`): a load and a
            // compare, no initialization.
            None => Timer::global(),
        }
    }
}

impl Timer {
    /// A reference for an entry of this timer.
    fn entry_ref(&self) -> TimerRef {
        #[cfg(not(loom))]
        if let Some(global) = GLOBAL.get() {
            if Arc::ptr_eq(&global.handle, &self.handle) {
                return TimerRef(None);
            }
        }
        TimerRef(Some(self.clone()))
    }

    fn with_mode(mode: Mode) -> Self {
        Timer {
            handle: Arc::new(Handle {
                shared: Arc::new(Shared::new(mode)),
                manual: mode == Mode::Manual,
            }),
        }
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    /// The process-wide timer, shared by everyone (including `cancelctx`).
    ///
    /// Its thread, named `cancelctx-timer`, is spawned on the first schedule
    /// and never exits.
    ///
    /// # Panics
    ///
    /// Scheduling on it panics if the OS cannot spawn the thread (see
    /// [`Timer::new`]). Under `--cfg loom` this function panics: loom models
    /// must use [`Timer::manual`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use cancelctx_timer::Timer;
    ///
    /// futures::executor::block_on(Timer::global().sleep(Duration::from_millis(1)));
    /// ```
    pub fn global() -> &'static Timer {
        #[cfg(not(loom))]
        {
            GLOBAL.get_or_init(Timer::new)
        }
        #[cfg(loom)]
        {
            panic!(
                "cancelctx-timer: Timer::global() is unavailable under cfg(loom); use Timer::manual()"
            )
        }
    }

    /// A private timer with its own thread, spawned lazily by the first
    /// schedule (so an unused timer costs no thread).
    ///
    /// # Panics
    ///
    /// The first schedule (`schedule`, `schedule_alarm`, or polling a
    /// [`Sleep`]) panics with a message naming the OS error if the thread
    /// cannot be spawned; the entry is not scheduled and a later schedule
    /// tries again. Schedules made while that first one spawns the thread
    /// wait for it, and if it fails, one of them tries in turn (and panics
    /// the same way if it fails too), so no entry is ever accepted without a
    /// thread to fire it. Use [`Timer::try_new`] to handle that error instead.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use std::time::{Duration, Instant};
    /// use cancelctx_timer::Timer;
    ///
    /// let timer = Timer::new();
    /// let (tx, rx) = mpsc::channel();
    /// let _entry = timer.schedule(Instant::now() + Duration::from_millis(1), move || {
    ///     tx.send(std::thread::current().name().map(String::from)).unwrap();
    /// });
    /// let name = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    /// assert_eq!(name.as_deref(), Some("cancelctx-timer"));
    /// ```
    pub fn new() -> Timer {
        Self::with_mode(Mode::Idle)
    }

    /// A private timer whose thread is spawned now; the spawn error is
    /// returned instead of panicking.
    ///
    /// # Errors
    ///
    /// The error from [`std::thread::Builder::spawn`]. (Under `--cfg loom`,
    /// always [`std::io::ErrorKind::Unsupported`].)
    ///
    /// # Examples
    ///
    /// ```
    /// use cancelctx_timer::Timer;
    ///
    /// let timer = Timer::try_new()?;
    /// futures::executor::block_on(timer.sleep(std::time::Duration::from_millis(1)));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_new() -> std::io::Result<Timer> {
        let timer = Self::with_mode(Mode::Running);
        driver::spawn(Arc::clone(&timer.handle.shared))?;
        Ok(timer)
    }

    /// A private timer whose thread runs under the real-time `SCHED_FIFO`
    /// policy at `priority` (1 to 99), spawned now.
    ///
    /// A normal timer thread is woken on time, but on a machine whose cores
    /// are all busy it may then wait for a CPU: up to a scheduler tick or
    /// more (4 ms at the common `HZ=250`). A real-time thread preempts normal
    /// threads as soon as it is woken, so deadlines fire on time even then.
    /// The callbacks run on that thread, so they must stay short (as they
    /// should anyway): a real-time thread that spins starves the normal ones
    /// on its core (Linux keeps 5 % of each second for them by default).
    /// Threads started from that thread (say, by a callback's first schedule
    /// on a lazy [`Timer::new`]) do not inherit the policy
    /// (`SCHED_RESET_ON_FORK`).
    ///
    /// To give contexts such a timer, make it the global one with
    /// [`Timer::init_global`] before anything schedules on the global timer.
    ///
    /// # Errors
    ///
    /// - [`ErrorKind::InvalidInput`](std::io::ErrorKind::InvalidInput) if
    ///   `priority` is 0 or above 99;
    /// - the OS error if the policy is refused: `EPERM` without the
    ///   `CAP_SYS_NICE` capability or an `RLIMIT_RTPRIO` of at least
    ///   `priority` (`ulimit -r`);
    /// - [`ErrorKind::Unsupported`](std::io::ErrorKind::Unsupported) on
    ///   platforms other than Linux (and under `--cfg loom`);
    /// - the error from [`std::thread::Builder::spawn`].
    ///
    /// No thread is left behind on error.
    ///
    /// # Examples
    ///
    /// ```
    /// use cancelctx_timer::Timer;
    ///
    /// // Falls back to a normal timer where real-time priority is not allowed.
    /// let timer = Timer::try_with_realtime_priority(10).or_else(|_| Timer::try_new())?;
    /// futures::executor::block_on(timer.sleep(std::time::Duration::from_millis(1)));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_with_realtime_priority(priority: u8) -> std::io::Result<Timer> {
        let timer = Self::with_mode(Mode::Running);
        driver::spawn_realtime(Arc::clone(&timer.handle.shared), priority)?;
        Ok(timer)
    }

    /// Makes `timer` the process-wide timer that [`Timer::global`] returns
    /// (and so the one every `cancelctx` deadline uses), if there is none
    /// yet. Call it at startup, before anything schedules on the global
    /// timer; `Err(timer)` gives the timer back if the global one already
    /// exists.
    ///
    /// # Examples
    ///
    /// ```
    /// use cancelctx_timer::Timer;
    ///
    /// if let Ok(timer) = Timer::try_with_realtime_priority(10) {
    ///     // Fails only if the global timer was created already.
    ///     let _ = Timer::init_global(timer);
    /// }
    /// let _entry = Timer::global().schedule(std::time::Instant::now(), || {});
    /// ```
    #[cfg(not(loom))]
    pub fn init_global(timer: Timer) -> Result<&'static Timer, Timer> {
        GLOBAL.set(timer)?;
        Ok(Timer::global())
    }

    /// A timer with **no thread**: entries fire only when someone calls
    /// [`Timer::fire_due`], on that caller's thread, with the caller's notion
    /// of "now".
    ///
    /// Meant for deterministic tests (and the loom models of `cancelctx`):
    /// time is whatever the test passes to `fire_due`, so nothing depends on
    /// the real clock or the scheduler. A [`Sleep`] on a manual timer
    /// completes only when `fire_due` fires it, even if its deadline is long
    /// past in real time.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    /// use std::time::{Duration, Instant};
    /// use cancelctx_timer::Timer;
    ///
    /// let timer = Timer::manual();
    /// let t0 = Instant::now();
    /// let hits = Arc::new(AtomicUsize::new(0));
    /// for ms in [10, 20, 30] {
    ///     let hits = Arc::clone(&hits);
    ///     timer.schedule(t0 + Duration::from_millis(ms), move || {
    ///         hits.fetch_add(1, Ordering::SeqCst);
    ///     });
    /// }
    /// assert_eq!(timer.fire_due(t0 + Duration::from_millis(20)), 2);
    /// assert_eq!(hits.load(Ordering::SeqCst), 2);
    /// assert_eq!(timer.next_deadline(), Some(t0 + Duration::from_millis(30)));
    /// ```
    pub fn manual() -> Timer {
        Self::with_mode(Mode::Manual)
    }

    /// Inserts `callback`, spawning the thread if this is a lazy timer's first
    /// entry.
    pub(crate) fn insert(&self, at: Instant, callback: Callback) -> Key {
        self.insert_spawning_with(at, callback, driver::spawn)
    }

    /// [`Timer::insert`], spawning the thread with `spawn` (tests inject
    /// failures).
    fn insert_spawning_with(
        &self,
        at: Instant,
        callback: Callback,
        spawn: impl Fn(Arc<Shared>) -> std::io::Result<()>,
    ) -> Key {
        let shared = self.shared();
        let (key, claimed) = shared.insert(at, callback);
        if claimed || (!self.handle.manual && shared.mode() != Mode::Running) {
            self.see_driven(key, claimed, spawn);
        }
        key
    }

    /// Returns once a thread drives the entry `key` just inserted, or panics
    /// with the entry removed: spawns the thread if the caller `claimed` that
    /// job, else waits for the inserter that did, and takes the job over if
    /// that spawn failed. So an entry accepted while a spawn was failing is
    /// never left without a thread.
    #[cold]
    #[inline(never)]
    fn see_driven(
        &self,
        key: Key,
        mut claimed: bool,
        spawn: impl Fn(Arc<Shared>) -> std::io::Result<()>,
    ) {
        let shared = self.shared();
        loop {
            if claimed {
                // A spawn that unwinds gives the job back too, or the
                // schedules waiting for it would wait forever.
                let spawned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    spawn(Arc::clone(&self.handle.shared))
                }));
                match spawned {
                    Ok(Ok(())) => return shared.spawned(),
                    Ok(Err(err)) => {
                        drop(shared.abort_spawn(key));
                        panic!(
                            "cancelctx-timer: failed to spawn the `{}` thread: {err}",
                            driver::THREAD_NAME
                        );
                    }
                    Err(payload) => {
                        drop(shared.abort_spawn(key));
                        std::panic::resume_unwind(payload);
                    }
                }
            }
            match shared.mode() {
                // Another inserter is spawning: a thread start takes tens of
                // microseconds, and only the first schedules ever wait here.
                Mode::Spawning => std::thread::yield_now(),
                Mode::Idle => claimed = shared.claim_spawn(),
                Mode::Manual | Mode::Running | Mode::Stopped => return,
            }
        }
    }

    /// Runs `f` on the timer thread once `at` has passed.
    ///
    /// A deadline in the past fires at the thread's next turn; a deadline far
    /// in the future is fine (it simply never fires while the process lives).
    /// The returned [`Entry`] cancels it; dropping the `Entry` leaves it
    /// scheduled. Cost: O(log n) plus one allocation to box `f` (none if `f`
    /// is zero-sized).
    ///
    /// Deadlines are kept to the nanosecond from about 292 years before the
    /// timer was created to at least 292 years after (on platforms whose
    /// `Instant` cannot go back that far, from its earliest value to 584
    /// years after that). Outside that range they saturate to its ends: an
    /// earlier deadline is due at the range's start (long past, so it still
    /// fires at the next turn, never early), a later one at the range's end
    /// (effectively never; [`Timer::next_deadline`] reports the end, and only
    /// a synthetic `now` beyond it passed to [`Timer::fire_due`] fires it).
    ///
    /// # Panics
    ///
    /// If this is the first schedule of a [`Timer::new`] or [`Timer::global`]
    /// timer and the OS cannot spawn its thread; or if the calling thread's
    /// shard already holds 2^32 - 1 live entries (about 4.3 billion, some
    /// 240 GB of them), the most a shard can index (the entry is then not
    /// scheduled and `f` is dropped).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use std::time::{Duration, Instant};
    /// use cancelctx_timer::Timer;
    ///
    /// let (tx, rx) = mpsc::channel();
    /// let at = Instant::now() + Duration::from_millis(2);
    /// let _entry = Timer::global().schedule(at, move || tx.send(Instant::now()).unwrap());
    /// let fired_at = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    /// assert!(fired_at >= at, "never early");
    /// ```
    pub fn schedule<F: FnOnce() + Send + 'static>(&self, at: Instant, f: F) -> Entry {
        let key = self.insert(at, Callback::Func(Box::new(f)));
        Entry::new(self.entry_ref(), key)
    }

    /// Fires `alarm` once `at` has passed, without allocating (amortized): the
    /// `Weak` fat pointer is stored in the timer's slab.
    ///
    /// When the entry fires, the `Weak` is upgraded outside the timer's lock;
    /// if the alarm has been dropped, nothing runs (the entry still counts as
    /// fired). The timer never keeps the alarm alive.
    ///
    /// # Panics
    ///
    /// As [`Timer::schedule`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::{Arc, Weak};
    /// use std::time::Instant;
    /// use cancelctx_timer::{Alarm, Timer};
    ///
    /// struct Counter(AtomicUsize);
    /// impl Alarm for Counter {
    ///     fn fire(self: Arc<Self>) {
    ///         self.0.fetch_add(1, Ordering::SeqCst);
    ///     }
    /// }
    ///
    /// let timer = Timer::manual();
    /// let now = Instant::now();
    /// let alive = Arc::new(Counter(AtomicUsize::new(0)));
    /// let dead = Arc::new(Counter(AtomicUsize::new(0)));
    /// timer.schedule_alarm(now, Arc::downgrade(&alive) as Weak<dyn Alarm>);
    /// timer.schedule_alarm(now, Arc::downgrade(&dead) as Weak<dyn Alarm>);
    /// drop(dead);
    /// assert_eq!(timer.fire_due(now), 2); // both count as fired...
    /// assert_eq!(alive.0.load(Ordering::SeqCst), 1); // ...only the live one ran
    /// ```
    pub fn schedule_alarm(&self, at: Instant, alarm: AlarmWeak<dyn Alarm>) -> Entry {
        let key = self.insert(at, Callback::Alarm(alarm));
        Entry::new(self.entry_ref(), key)
    }

    /// A future that completes once `duration` has elapsed.
    ///
    /// If `Instant::now() + duration` overflows (e.g. `Duration::MAX`), the
    /// future never completes, schedules nothing and never panics. See
    /// [`Sleep`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use cancelctx_timer::Timer;
    ///
    /// let start = Instant::now();
    /// futures::executor::block_on(Timer::global().sleep(Duration::from_millis(2)));
    /// assert!(start.elapsed() >= Duration::from_millis(2));
    /// ```
    pub fn sleep(&self, duration: Duration) -> Sleep {
        Sleep::new(self.clone(), Instant::now().checked_add(duration))
    }

    /// A future that completes once `at` has passed. See [`Sleep`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use cancelctx_timer::Timer;
    ///
    /// let at = Instant::now() + Duration::from_millis(2);
    /// futures::executor::block_on(Timer::global().sleep_until(at));
    /// assert!(Instant::now() >= at);
    /// ```
    pub fn sleep_until(&self, at: Instant) -> Sleep {
        Sleep::new(self.clone(), Some(at))
    }

    /// A snapshot of this timer's counters, exact and consistent (it briefly
    /// holds all of the timer's shard locks at once).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use cancelctx_timer::Timer;
    ///
    /// let timer = Timer::manual();
    /// let entry = timer.schedule(Instant::now() + Duration::from_secs(60), || {});
    /// assert_eq!(timer.stats().armed, 1);
    /// entry.cancel();
    /// assert_eq!(timer.stats().armed, 0);
    /// ```
    pub fn stats(&self) -> Stats {
        self.shared().stats()
    }

    /// Fires, on the calling thread, every entry whose deadline is `<= now`,
    /// in deadline order (FIFO among equal deadlines, see [*Order*](Timer#order));
    /// returns how many fired.
    ///
    /// This is how a [manual](Timer::manual) timer advances. It works on any
    /// timer: on a threaded one it competes with the thread (each entry still
    /// fires exactly once, on whichever thread takes it first), and passing a
    /// `now` ahead of the real clock fires entries early, on purpose. Entries
    /// scheduled by the callbacks themselves fire in the same call if they are
    /// due at `now`. Callbacks run with no lock held, in batches; panics
    /// are caught and counted, as on the timer thread.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use cancelctx_timer::Timer;
    ///
    /// let timer = Timer::manual();
    /// let t0 = Instant::now();
    /// timer.schedule(t0 + Duration::from_secs(1), || {});
    /// assert_eq!(timer.fire_due(t0), 0);
    /// assert_eq!(timer.fire_due(t0 + Duration::from_secs(1)), 1);
    /// ```
    pub fn fire_due(&self, now: Instant) -> usize {
        self.shared().fire_due(now)
    }

    /// The earliest scheduled deadline, if any (exact, except for deadlines
    /// outside the timer's range, see [`Timer::schedule`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use cancelctx_timer::Timer;
    ///
    /// let timer = Timer::manual();
    /// assert_eq!(timer.next_deadline(), None);
    /// let at = Instant::now() + Duration::from_secs(5);
    /// let _entry = timer.schedule(at, || {});
    /// assert_eq!(timer.next_deadline(), Some(at));
    /// ```
    pub fn next_deadline(&self) -> Option<Instant> {
        self.shared().next_deadline()
    }

    /// `true` for a [manual](Timer::manual) timer (no thread; only
    /// [`Timer::fire_due`] fires entries).
    pub(crate) fn is_manual(&self) -> bool {
        self.handle.manual
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;
    use std::thread;

    use super::*;

    /// A schedule made while another one's thread spawn is failing is not
    /// left without a thread: it waits for that spawn, then spawns the thread
    /// itself, and its entry fires.
    #[test]
    fn an_entry_accepted_while_the_spawn_fails_still_fires() {
        let timer = Timer::new();
        let (spawning_tx, spawning_rx) = mpsc::channel();
        let (fail_tx, fail_rx) = mpsc::channel::<()>();
        let failed_fired = Arc::new(AtomicBool::new(false));
        let failing = {
            let (timer, failed_fired) = (timer.clone(), Arc::clone(&failed_fired));
            thread::spawn(move || {
                let fired = move || failed_fired.store(true, Ordering::SeqCst);
                catch_unwind(AssertUnwindSafe(|| {
                    timer.insert_spawning_with(
                        Instant::now(),
                        Callback::Func(Box::new(fired)),
                        |_| {
                            spawning_tx.send(()).unwrap();
                            fail_rx.recv().unwrap();
                            Err(std::io::Error::other("injected spawn failure"))
                        },
                    )
                }))
            })
        };
        spawning_rx.recv().unwrap();
        // The first schedule is spawning the thread; a second one comes in.
        let (fired_tx, fired_rx) = mpsc::channel();
        let second = {
            let timer = timer.clone();
            thread::spawn(move || {
                timer.schedule(Instant::now(), move || fired_tx.send(()).unwrap())
            })
        };
        while timer.stats().armed < 2 {
            thread::yield_now();
        }
        fail_tx.send(()).unwrap();
        let panic = failing.join().unwrap().expect_err("a failed spawn panics");
        let message = panic.downcast_ref::<String>().map_or("", String::as_str);
        assert!(message.contains("failed to spawn"), "{message}");
        let _entry = second.join().unwrap();
        fired_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the entry accepted during the failed spawn fires");
        assert!(
            !failed_fired.load(Ordering::SeqCst),
            "the failed schedule's entry was removed"
        );
        let stats = timer.stats();
        assert_eq!((stats.armed, stats.scheduled, stats.fired), (0, 1, 1));
    }

    /// A claimer whose spawn unwinds (injected: the spawn function panics)
    /// gives the job back: a later schedule spawns the thread instead of
    /// waiting forever for `Spawning` to end.
    #[test]
    fn a_claimer_that_panics_mid_spawn_does_not_hang_later_schedules() {
        let timer = Timer::new();
        let claimer = {
            let timer = timer.clone();
            thread::spawn(move || {
                catch_unwind(AssertUnwindSafe(|| {
                    timer.insert_spawning_with(
                        Instant::now(),
                        Callback::Func(Box::new(|| {})),
                        |_| panic!("injected panic inside the spawn"),
                    )
                }))
            })
        };
        assert!(claimer.join().unwrap().is_err(), "the claimer panicked");
        let (done_tx, done_rx) = mpsc::channel();
        let later = timer.clone();
        thread::spawn(move || {
            let entry = later.schedule(Instant::now(), || {});
            done_tx.send(()).unwrap();
            drop(entry);
        });
        assert!(
            done_rx.recv_timeout(Duration::from_secs(5)).is_ok(),
            "a later schedule is still spinning after 5 s (mode stuck at {:?})",
            timer.shared().mode()
        );
    }
}
