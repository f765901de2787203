//! The `Sleep` future, on manual and threaded timers.
#![cfg(not(loom))]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use cancelctx_timer::{Sleep, Timer};

/// A waker that counts its wakes.
#[derive(Default)]
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, SeqCst);
    }
}

fn counting_waker() -> (Arc<CountingWaker>, Waker) {
    let inner = Arc::new(CountingWaker::default());
    (Arc::clone(&inner), Waker::from(inner))
}

fn poll_with(sleep: &mut Sleep, waker: &Waker) -> Poll<()> {
    Pin::new(sleep).poll(&mut Context::from_waker(waker))
}

#[test]
fn sleep_is_unpin_send_sync() {
    fn assert_traits<T: Unpin + Send + Sync + 'static>() {}
    assert_traits::<Sleep>();
}

#[test]
fn block_on_sleep_on_a_threaded_timer() {
    let timer = Timer::new();
    let start = Instant::now();
    futures::executor::block_on(timer.sleep(Duration::from_millis(3)));
    assert!(start.elapsed() >= Duration::from_millis(3), "never early");
    assert!(start.elapsed() < Duration::from_secs(10));
    let stats = timer.stats();
    assert_eq!((stats.fired, stats.armed), (1, 0));
}

#[test]
fn block_on_global_sleep_until() {
    let at = Instant::now() + Duration::from_millis(2);
    futures::executor::block_on(Timer::global().sleep_until(at));
    assert!(Instant::now() >= at);
}

#[test]
fn many_concurrent_sleeps() {
    let timer = Timer::new();
    std::thread::scope(|s| {
        for i in 0..8u64 {
            let timer = timer.clone();
            s.spawn(move || {
                for j in 0..20u64 {
                    let d = Duration::from_micros(100 * ((i * 7 + j) % 13));
                    let start = Instant::now();
                    futures::executor::block_on(timer.sleep(d));
                    assert!(start.elapsed() >= d);
                }
            });
        }
    });
    assert_eq!(timer.stats().armed, 0);
}

#[test]
fn elapsed_deadline_on_threaded_timer_is_ready_at_once() {
    let timer = Timer::new();
    let (_, waker) = counting_waker();
    let mut sleep = timer.sleep(Duration::ZERO);
    assert_eq!(poll_with(&mut sleep, &waker), Poll::Ready(()));
    assert!(sleep.is_elapsed());
    assert_eq!(
        poll_with(&mut sleep, &waker),
        Poll::Ready(()),
        "stays ready"
    );
    assert_eq!(timer.stats().scheduled, 0, "nothing was scheduled");
}

#[test]
fn manual_sleep_completes_only_via_fire_due() {
    let timer = Timer::manual();
    let (count, waker) = counting_waker();
    let mut sleep = timer.sleep(Duration::ZERO);
    let at = sleep.deadline().unwrap();
    assert_eq!(poll_with(&mut sleep, &waker), Poll::Pending);
    assert_eq!(timer.stats().armed, 1);
    assert_eq!(poll_with(&mut sleep, &waker), Poll::Pending);
    assert_eq!(count.0.load(SeqCst), 0);
    assert_eq!(timer.fire_due(at), 1);
    assert_eq!(count.0.load(SeqCst), 1);
    assert_eq!(poll_with(&mut sleep, &waker), Poll::Ready(()));
}

#[test]
fn the_latest_waker_is_woken() {
    let timer = Timer::manual();
    let (first, first_waker) = counting_waker();
    let (second, second_waker) = counting_waker();
    let mut sleep = timer.sleep(Duration::ZERO);
    let at = sleep.deadline().unwrap();
    assert_eq!(poll_with(&mut sleep, &first_waker), Poll::Pending);
    assert_eq!(poll_with(&mut sleep, &second_waker), Poll::Pending);
    timer.fire_due(at);
    assert_eq!(first.0.load(SeqCst), 0);
    assert_eq!(second.0.load(SeqCst), 1);
}

#[test]
fn dropping_a_pending_sleep_removes_its_entry() {
    let timer = Timer::new();
    let (_, waker) = counting_waker();
    let mut sleep = timer.sleep(Duration::from_secs(3600));
    assert_eq!(poll_with(&mut sleep, &waker), Poll::Pending);
    assert_eq!(timer.stats().armed, 1);
    drop(sleep);
    let stats = timer.stats();
    assert_eq!(stats.armed, 0);
    assert_eq!(stats.canceled, 1);
}

#[test]
fn unpolled_sleep_schedules_nothing() {
    let timer = Timer::manual();
    let sleep = timer.sleep(Duration::from_secs(1));
    assert_eq!(timer.stats().scheduled, 0);
    drop(sleep);
    assert_eq!(timer.stats().canceled, 0);
}

#[test]
fn duration_max_never_completes_and_never_panics() {
    for timer in [Timer::new(), Timer::manual()] {
        let (count, waker) = counting_waker();
        let mut sleep = timer.sleep(Duration::MAX);
        assert_eq!(sleep.deadline(), None);
        for _ in 0..3 {
            assert_eq!(poll_with(&mut sleep, &waker), Poll::Pending);
        }
        assert_eq!(timer.stats().armed, 0, "nothing inserted");
        assert_eq!(
            timer.fire_due(Instant::now() + Duration::from_secs(1 << 40)),
            0
        );
        assert_eq!(poll_with(&mut sleep, &waker), Poll::Pending);
        assert_eq!(count.0.load(SeqCst), 0);
        assert!(!sleep.is_elapsed());
    }
}

#[test]
fn reset_moves_the_deadline_and_keeps_the_waker() {
    let timer = Timer::manual();
    let t0 = Instant::now();
    let (count, waker) = counting_waker();
    let mut sleep = timer.sleep_until(t0 + Duration::from_secs(10));
    assert_eq!(poll_with(&mut sleep, &waker), Poll::Pending);
    sleep.reset(t0 + Duration::from_secs(1));
    assert_eq!(sleep.deadline(), Some(t0 + Duration::from_secs(1)));
    assert_eq!(timer.stats().armed, 1, "old entry removed, new one armed");
    // Woken at the new deadline without polling again.
    assert_eq!(timer.fire_due(t0 + Duration::from_secs(1)), 1);
    assert_eq!(count.0.load(SeqCst), 1);
    assert_eq!(poll_with(&mut sleep, &waker), Poll::Ready(()));
    // Reset after completion starts over.
    sleep.reset(t0 + Duration::from_secs(2));
    assert!(!sleep.is_elapsed());
    assert_eq!(poll_with(&mut sleep, &waker), Poll::Pending);
    assert_eq!(timer.fire_due(t0 + Duration::from_secs(2)), 1);
    assert_eq!(poll_with(&mut sleep, &waker), Poll::Ready(()));
}

#[test]
fn reset_of_a_never_sleep_makes_it_finite() {
    let timer = Timer::new();
    let mut sleep = timer.sleep(Duration::MAX);
    sleep.reset(Instant::now() + Duration::from_millis(1));
    futures::executor::block_on(&mut sleep);
    assert!(sleep.is_elapsed());
}

/// A waker whose last drop cancels another `Sleep` of the same timer. The
/// timer must never drop wakers while holding its lock, or this deadlocks.
struct ReentrantWaker {
    victim: Mutex<Option<Sleep>>,
}

impl Wake for ReentrantWaker {
    fn wake(self: Arc<Self>) {}
}

impl Drop for ReentrantWaker {
    fn drop(&mut self) {
        drop(self.victim.lock().unwrap().take());
    }
}

#[test]
fn waker_drop_may_reenter_the_timer() {
    let timer = Timer::manual();
    let t0 = Instant::now();
    let (_, plain) = counting_waker();

    let mut victim = timer.sleep_until(t0 + Duration::from_secs(5));
    assert_eq!(poll_with(&mut victim, &plain), Poll::Pending);
    let reentrant = Waker::from(Arc::new(ReentrantWaker {
        victim: Mutex::new(Some(victim)),
    }));

    let mut sleep = timer.sleep_until(t0 + Duration::from_secs(1));
    assert_eq!(poll_with(&mut sleep, &reentrant), Poll::Pending);
    drop(reentrant); // the timer's slot now holds the only reference
    assert_eq!(timer.stats().armed, 2);
    // Swapping the waker drops the old one, which cancels `victim`.
    assert_eq!(poll_with(&mut sleep, &plain), Poll::Pending);
    let stats = timer.stats();
    assert_eq!((stats.armed, stats.canceled), (1, 1));

    // Same through firing: the fired waker is dropped after the wake.
    let mut victim = timer.sleep_until(t0 + Duration::from_secs(5));
    assert_eq!(poll_with(&mut victim, &plain), Poll::Pending);
    let reentrant = Waker::from(Arc::new(ReentrantWaker {
        victim: Mutex::new(Some(victim)),
    }));
    assert_eq!(poll_with(&mut sleep, &reentrant), Poll::Pending);
    drop(reentrant);
    assert_eq!(timer.fire_due(t0 + Duration::from_secs(1)), 1);
    assert_eq!(timer.stats().armed, 0);
}

#[test]
fn sleep_debug_shows_deadline() {
    let sleep = Timer::manual().sleep(Duration::from_secs(1));
    assert!(format!("{sleep:?}").starts_with("Sleep"));
}

/// Regression. `Sleep::reset` promises: "If the future was waiting, its entry is
/// rescheduled and keeps the registered waker, so the task is woken at the
/// new deadline without having to poll first." A `sleep(Duration::MAX)` (the
/// usual "disarmed" sleep, and the one in `reset`'s own doc example) that a
/// task has polled is waiting too, but it kept no waker: resetting it arms
/// nothing, and the waiting task is never woken.
#[test]
fn reset_of_a_polled_never_sleep_wakes_the_waiting_task() {
    let timer = Timer::manual();
    let (count, waker) = counting_waker();
    let mut sleep = timer.sleep(Duration::MAX);
    assert_eq!(
        poll_with(&mut sleep, &waker),
        Poll::Pending,
        "the task waits"
    );
    let at = Instant::now();
    sleep.reset(at);
    assert_eq!(timer.fire_due(at), 1, "the reset sleep was not armed");
    assert_eq!(count.0.load(SeqCst), 1, "the waiting task was not woken");
    assert_eq!(poll_with(&mut sleep, &waker), Poll::Ready(()));
}

/// The same on a threaded timer, with a real executor: a task blocks on a
/// disarmed sleep that another thread arms with `reset`. The task never
/// wakes.
#[test]
fn reset_from_another_thread_of_a_waiting_never_sleep_completes() {
    let timer = Timer::new();
    let sleep = Arc::new(Mutex::new(timer.sleep(Duration::MAX)));
    let (polled_tx, polled_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    {
        let sleep = Arc::clone(&sleep);
        std::thread::spawn(move || {
            futures::executor::block_on(std::future::poll_fn(|cx| {
                let poll = Pin::new(&mut *sleep.lock().unwrap()).poll(cx);
                let _ = polled_tx.send(());
                poll
            }));
            done_tx.send(()).unwrap();
        });
    }
    polled_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    sleep
        .lock()
        .unwrap()
        .reset(Instant::now() + Duration::from_millis(10));
    assert!(
        done_rx.recv_timeout(Duration::from_secs(5)).is_ok(),
        "the task waiting on the reset sleep was not woken within 5 s"
    );
}
