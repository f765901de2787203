//! A runtime-free sleep future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use crate::callback::Callback;
use crate::queue::Key;
use crate::timer::Timer;

/// A future that completes once its deadline has passed, from
/// [`Timer::sleep`] and [`Timer::sleep_until`].
///
/// Works on any executor, or none: the first poll schedules an entry holding
/// the task's [`Waker`](std::task::Waker), and the timer thread wakes it when
/// the deadline passes. Polling with a different waker replaces the stored
/// one. Once complete, further polls return `Ready(())` again.
///
/// A `Sleep` whose deadline could not be represented (e.g.
/// `sleep(Duration::MAX)`) never completes and schedules nothing; it keeps
/// the waker of its last poll, so that [`reset`](Sleep::reset) wakes that
/// task at the new deadline.
///
/// `Sleep` is `Unpin`, `Send` and `Sync`.
///
/// # Precision
///
/// Never completes before its deadline. The wake-up is as precise as the
/// timer's (see [`Timer`]'s *Precision*: typically tens of microseconds late
/// on an idle machine), plus however long the executor takes to poll the task
/// after the wake. On a threaded timer, a `Sleep` whose deadline has already
/// passed when first polled completes immediately. On a
/// [manual](Timer::manual) timer, it completes only when
/// [`Timer::fire_due`] fires it.
///
/// # Cancellation safety
///
/// Dropping a `Sleep` cancels its entry: it is removed from the timer's heap
/// at once (O(log n)), so memory never waits for the deadline, and nothing is
/// woken. Dropping it at any point — for example as the losing branch of a
/// `select!` — loses nothing, and a new `Sleep` for the same deadline behaves
/// identically.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use cancelctx_timer::Timer;
///
/// let timer = Timer::new();
/// let start = Instant::now();
/// futures::executor::block_on(timer.sleep(Duration::from_millis(3)));
/// assert!(start.elapsed() >= Duration::from_millis(3));
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct Sleep {
    timer: Timer,
    /// `None`: never completes.
    deadline: Option<Instant>,
    state: State,
    /// The last poll's waker while `deadline` is `None` (the task waits, with
    /// no entry to hold its waker): [`Sleep::reset`] arms the entry with it.
    unarmed_waker: Option<Waker>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not scheduled yet (never polled, or reset after firing).
    Idle,
    /// Scheduled with a waker.
    Armed(Key),
    /// Completed.
    Done,
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .field("done", &(self.state == State::Done))
            .finish_non_exhaustive()
    }
}

impl Sleep {
    pub(crate) fn new(timer: Timer, deadline: Option<Instant>) -> Self {
        Self {
            timer,
            deadline,
            state: State::Idle,
            unarmed_waker: None,
        }
    }

    /// The deadline, or `None` if it overflowed `Instant` (this `Sleep` never
    /// completes).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use cancelctx_timer::Timer;
    ///
    /// assert!(Timer::global().sleep(Duration::from_secs(1)).deadline().is_some());
    /// assert!(Timer::global().sleep(Duration::MAX).deadline().is_none());
    /// ```
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// `true` once this future has returned `Ready`.
    pub fn is_elapsed(&self) -> bool {
        self.state == State::Done
    }

    /// Moves the deadline to `at`, as if this were a fresh
    /// [`Timer::sleep_until`]`(at)`, even if it had already completed.
    ///
    /// If the future was waiting, its entry is rescheduled and keeps the
    /// registered waker, so the task is woken at the new deadline without
    /// having to poll first.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use cancelctx_timer::Timer;
    ///
    /// let mut sleep = Timer::global().sleep(Duration::MAX);
    /// let at = Instant::now() + Duration::from_millis(1);
    /// sleep.reset(at);
    /// assert_eq!(sleep.deadline(), Some(at));
    /// futures::executor::block_on(&mut sleep);
    /// assert!(sleep.is_elapsed());
    /// ```
    pub fn reset(&mut self, at: Instant) {
        let old = match std::mem::replace(&mut self.state, State::Idle) {
            State::Armed(key) => self.timer.shared().cancel(key),
            State::Idle | State::Done => None,
        };
        self.deadline = Some(at);
        // A waiting never-completing sleep has no entry: its waker is here.
        let waker = match old {
            Some(Callback::Wake(waker)) => Some(waker),
            _ => self.unarmed_waker.take(),
        };
        if let Some(waker) = waker {
            let key = self.timer.insert(at, Callback::Wake(waker));
            self.state = State::Armed(key);
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let Some(deadline) = this.deadline else {
            // Never completes unless `reset`, which then needs this waker.
            match &this.unarmed_waker {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                _ => this.unarmed_waker = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        };
        match this.state {
            State::Done => Poll::Ready(()),
            State::Idle => {
                if !this.timer.is_manual() && Instant::now() >= deadline {
                    this.state = State::Done;
                    return Poll::Ready(());
                }
                let key = this
                    .timer
                    .insert(deadline, Callback::Wake(cx.waker().clone()));
                this.state = State::Armed(key);
                // If it fired already, the waker has been (or is being) woken
                // and the next poll sees the entry gone.
                Poll::Pending
            }
            State::Armed(key) => {
                if this.timer.shared().register_waker(key, cx.waker()) {
                    Poll::Pending
                } else {
                    this.state = State::Done;
                    Poll::Ready(())
                }
            }
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let State::Armed(key) = self.state {
            let removed = self.timer.shared().cancel(key);
            drop(removed);
        }
    }
}
