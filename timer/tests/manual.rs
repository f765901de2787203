//! Deterministic tests on manual timers: time is whatever `fire_due` is told.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, Weak, mpsc};
use std::time::{Duration, Instant};

use cancelctx_timer::{Alarm, Entry, Timer};

fn ms(base: Instant, n: u64) -> Instant {
    base + Duration::from_millis(n)
}

type Log = Arc<Mutex<Vec<u32>>>;
type Job = Box<dyn FnOnce() + Send>;

/// Records the order in which callbacks ran.
fn recorder() -> (Log, impl Fn(u32) -> Job) {
    let log: Log = Arc::default();
    let make = {
        let log = Arc::clone(&log);
        move |n: u32| -> Job {
            let log = Arc::clone(&log);
            Box::new(move || log.lock().unwrap().push(n))
        }
    };
    (log, make)
}

/// Sends on a channel when dropped.
struct DropSignal(mpsc::Sender<()>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

#[test]
fn fire_due_fires_due_entries_in_order() {
    let timer = Timer::manual();
    let t0 = Instant::now();
    let (log, make) = recorder();
    for n in [30, 10, 20, 40] {
        timer.schedule(ms(t0, n.into()), make(n));
    }
    assert_eq!(timer.next_deadline(), Some(ms(t0, 10)));
    assert_eq!(timer.fire_due(ms(t0, 9)), 0, "nothing is due yet");
    assert_eq!(timer.fire_due(ms(t0, 20)), 2, "deadline == now fires");
    assert_eq!(*log.lock().unwrap(), vec![10, 20]);
    assert_eq!(timer.fire_due(ms(t0, 20)), 0, "fires once");
    assert_eq!(timer.fire_due(ms(t0, 1000)), 2);
    assert_eq!(*log.lock().unwrap(), vec![10, 20, 30, 40]);
    assert_eq!(timer.next_deadline(), None);
}

#[test]
fn equal_deadlines_fire_fifo() {
    let timer = Timer::manual();
    let t0 = Instant::now();
    let (log, make) = recorder();
    for n in 0..100 {
        timer.schedule(t0, make(n));
    }
    assert_eq!(timer.fire_due(t0), 100);
    assert_eq!(*log.lock().unwrap(), (0..100).collect::<Vec<_>>());
}

#[test]
fn fire_due_runs_more_than_one_batch() {
    let timer = Timer::manual();
    let t0 = Instant::now();
    let hits = Arc::new(AtomicUsize::new(0));
    for n in 0..5_000 {
        let hits = Arc::clone(&hits);
        timer.schedule(ms(t0, n % 7), move || {
            hits.fetch_add(1, SeqCst);
        });
    }
    assert_eq!(timer.fire_due(ms(t0, 7)), 5_000);
    assert_eq!(hits.load(SeqCst), 5_000);
    assert_eq!(timer.stats().armed, 0);
}

#[test]
fn fire_due_runs_on_the_calling_thread() {
    let timer = Timer::manual();
    let now = Instant::now();
    let caller = std::thread::current().id();
    let (tx, rx) = mpsc::channel();
    timer.schedule(now, move || tx.send(std::thread::current().id()).unwrap());
    timer.fire_due(now);
    assert_eq!(rx.try_recv(), Ok(caller));
}

#[test]
fn cancel_returns_true_exactly_once() {
    let timer = Timer::manual();
    let t0 = Instant::now();
    let entry = timer.schedule(ms(t0, 10), || panic!("canceled entry ran"));
    assert!(entry.is_pending());
    assert!(entry.cancel());
    assert!(!entry.cancel());
    assert!(!entry.is_pending());
    assert_eq!(timer.fire_due(ms(t0, 100)), 0);
    let stats = timer.stats();
    assert_eq!((stats.armed, stats.canceled, stats.fired), (0, 1, 0));
}

#[test]
fn cancel_after_fire_returns_false() {
    let timer = Timer::manual();
    let now = Instant::now();
    let entry = timer.schedule(now, || {});
    assert_eq!(timer.fire_due(now), 1);
    assert!(!entry.cancel());
    assert_eq!(timer.stats().canceled, 0);
}

#[test]
fn concurrent_cancels_exactly_one_wins() {
    let timer = Timer::manual();
    let t0 = Instant::now();
    for _ in 0..200 {
        let entry = Arc::new(timer.schedule(ms(t0, 5), || {}));
        let wins: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let entry = Arc::clone(&entry);
                    s.spawn(move || usize::from(entry.cancel()))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(wins, 1);
    }
    assert_eq!(timer.stats().canceled, 200);
}

#[test]
fn dropping_an_entry_leaves_it_scheduled() {
    let timer = Timer::manual();
    let now = Instant::now();
    let hits = Arc::new(AtomicUsize::new(0));
    {
        let hits = Arc::clone(&hits);
        drop(timer.schedule(now, move || {
            hits.fetch_add(1, SeqCst);
        }));
    }
    assert_eq!(timer.stats().armed, 1);
    assert_eq!(timer.fire_due(now), 1);
    assert_eq!(hits.load(SeqCst), 1);
}

#[test]
fn entry_and_timer_debug() {
    let timer = Timer::manual();
    let at = Instant::now() + Duration::from_secs(3);
    let entry = timer.schedule(at, || {});
    let debug = format!("{entry:?}");
    assert!(debug.starts_with("Entry"), "{debug}");
    assert!(format!("{timer:?}").contains("manual: true"));
}

struct Counter(AtomicUsize);

impl Alarm for Counter {
    fn fire(self: Arc<Self>) {
        self.0.fetch_add(1, SeqCst);
    }
}

#[test]
fn alarm_fires_while_alive() {
    let timer = Timer::manual();
    let now = Instant::now();
    let alarm = Arc::new(Counter(AtomicUsize::new(0)));
    let _entry = timer.schedule_alarm(now, Arc::downgrade(&alarm) as Weak<dyn Alarm>);
    assert_eq!(Arc::strong_count(&alarm), 1, "the timer holds only a Weak");
    assert_eq!(timer.fire_due(now), 1);
    assert_eq!(alarm.0.load(SeqCst), 1);
    assert_eq!(
        Arc::weak_count(&alarm),
        0,
        "the Weak is released after firing"
    );
}

#[test]
fn alarm_with_dropped_arc_does_nothing() {
    struct Boom;
    impl Alarm for Boom {
        fn fire(self: Arc<Self>) {
            panic!("a dead alarm fired");
        }
    }
    let timer = Timer::manual();
    let now = Instant::now();
    let alarm = Arc::new(Boom);
    let _entry = timer.schedule_alarm(now, Arc::downgrade(&alarm) as Weak<dyn Alarm>);
    drop(alarm);
    assert_eq!(timer.fire_due(now), 1, "counts as fired");
    let stats = timer.stats();
    assert_eq!((stats.fired, stats.panicked, stats.armed), (1, 0, 0));
}

#[test]
fn canceled_alarm_does_not_fire() {
    let timer = Timer::manual();
    let now = Instant::now();
    let alarm = Arc::new(Counter(AtomicUsize::new(0)));
    let entry = timer.schedule_alarm(now, Arc::downgrade(&alarm) as Weak<dyn Alarm>);
    assert!(entry.cancel());
    assert_eq!(Arc::weak_count(&alarm), 0, "cancel drops the Weak");
    assert_eq!(timer.fire_due(now), 0);
    assert_eq!(alarm.0.load(SeqCst), 0);
}

#[test]
fn panicking_callback_is_counted_and_others_still_fire() {
    let timer = Timer::manual();
    let t0 = Instant::now();
    let (log, make) = recorder();
    timer.schedule(ms(t0, 1), make(1));
    timer.schedule(ms(t0, 2), || panic!("boom (expected by the test)"));
    timer.schedule(ms(t0, 3), make(3));
    assert_eq!(timer.fire_due(ms(t0, 3)), 3);
    assert_eq!(*log.lock().unwrap(), vec![1, 3]);
    assert_eq!(timer.stats().panicked, 1);
    timer.schedule(ms(t0, 4), make(4));
    assert_eq!(timer.fire_due(ms(t0, 4)), 1);
    assert_eq!(*log.lock().unwrap(), vec![1, 3, 4]);
}

#[test]
fn callbacks_may_reenter_the_timer() {
    let timer = Timer::manual();
    let t0 = Instant::now();
    let (log, make) = recorder();
    let victim: Arc<Mutex<Option<Entry>>> = Arc::new(Mutex::new(None));
    {
        let timer2 = timer.clone();
        let victim = Arc::clone(&victim);
        let follow_up = make(2);
        timer.schedule(ms(t0, 1), move || {
            // Schedule something already due, and cancel a pending entry.
            timer2.schedule(ms(t0, 1), follow_up);
            assert!(victim.lock().unwrap().take().unwrap().cancel());
            let _ = timer2.stats();
            let _ = timer2.next_deadline();
        });
    }
    *victim.lock().unwrap() = Some(timer.schedule(ms(t0, 5), make(99)));
    assert_eq!(
        timer.fire_due(ms(t0, 1)),
        2,
        "follow-up fires in the same call"
    );
    assert_eq!(*log.lock().unwrap(), vec![2]);
    assert_eq!(timer.fire_due(ms(t0, 10)), 0, "victim was canceled");
}

#[test]
fn worst_lateness_is_measured_against_now() {
    let timer = Timer::manual();
    let t0 = Instant::now();
    timer.schedule(ms(t0, 10), || {});
    timer.schedule(ms(t0, 40), || {});
    timer.fire_due(ms(t0, 50));
    assert_eq!(timer.stats().worst_lateness, Duration::from_millis(40));
    timer.schedule(ms(t0, 60), || {});
    timer.fire_due(ms(t0, 61));
    assert_eq!(timer.stats().worst_lateness, Duration::from_millis(40));
}

#[test]
fn stats_count_everything() {
    let timer = Timer::manual();
    let t0 = Instant::now();
    let a = timer.schedule(ms(t0, 1), || {});
    timer.schedule(ms(t0, 2), || {});
    timer.schedule(ms(t0, 3), || {});
    assert!(a.cancel());
    timer.fire_due(ms(t0, 2));
    let stats = timer.stats();
    assert_eq!(stats.armed, 1);
    assert_eq!(stats.scheduled, 3);
    assert_eq!(stats.fired, 1);
    assert_eq!(stats.canceled, 1);
    assert_eq!(stats.panicked, 0);
    assert_eq!(stats.wakeups, 0, "no thread, no wake-ups");
}

#[test]
fn million_schedule_and_cancel_leaves_nothing_armed() {
    let timer = Timer::manual();
    let t0 = Instant::now();
    let entries: Vec<Entry> = (0..1_000_000u64)
        .map(|n| timer.schedule(ms(t0, 1 + n % 10_000), || {}))
        .collect();
    assert_eq!(timer.stats().armed, 1_000_000);
    // Cancel from both ends towards the middle.
    let (front, back) = entries.split_at(500_000);
    for (a, b) in front.iter().zip(back.iter().rev()) {
        assert!(a.cancel());
        assert!(b.cancel());
    }
    let stats = timer.stats();
    assert_eq!(stats.armed, 0);
    assert_eq!(stats.canceled, 1_000_000);
    assert_eq!(timer.next_deadline(), None);
    assert_eq!(timer.fire_due(ms(t0, 20_000)), 0);
}

#[test]
fn far_future_and_past_deadlines() {
    let timer = Timer::manual();
    let now = Instant::now();
    let far = now + Duration::from_secs(100 * 365 * 24 * 3600);
    timer.schedule(far, || panic!("far fired"));
    let past = now.checked_sub(Duration::from_millis(1)).unwrap_or(now);
    let hits = Arc::new(AtomicUsize::new(0));
    {
        let hits = Arc::clone(&hits);
        timer.schedule(past, move || {
            hits.fetch_add(1, SeqCst);
        });
    }
    assert_eq!(timer.fire_due(now), 1);
    assert_eq!(hits.load(SeqCst), 1);
    assert_eq!(timer.next_deadline(), Some(far));
}

/// Deadlines (and `now`s) from before the timer existed are exact too: a
/// manual timer fires them at exactly the `now` they are due.
#[test]
fn deadlines_from_before_the_timer_was_created() {
    let t0 = Instant::now();
    let earlier = t0.checked_sub(Duration::from_secs(3600)).unwrap_or(t0);
    std::thread::sleep(Duration::from_millis(1));
    let timer = Timer::manual();
    let hits = Arc::new(AtomicUsize::new(0));
    for at in [earlier, t0] {
        let hits = Arc::clone(&hits);
        timer.schedule(at, move || {
            hits.fetch_add(1, SeqCst);
        });
    }
    assert_eq!(timer.next_deadline(), Some(earlier));
    let mut fired = 0;
    if earlier < t0 {
        fired += timer.fire_due(t0 - Duration::from_nanos(1));
        assert_eq!(fired, 1, "only the earlier one");
        assert_eq!(timer.next_deadline(), Some(t0));
    }
    fired += timer.fire_due(t0);
    assert_eq!(fired, 2);
    assert_eq!(hits.load(SeqCst), 2);
}

#[test]
fn dropping_a_manual_timer_drops_pending_callbacks() {
    let timer = Timer::manual();
    let (tx, rx) = mpsc::channel();
    let guard = DropSignal(tx);
    timer.schedule(Instant::now() + Duration::from_secs(60), move || {
        drop(guard)
    });
    assert!(rx.try_recv().is_err());
    drop(timer);
    assert_eq!(rx.try_recv(), Ok(()));
}

#[test]
fn handles_are_send_sync() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Timer>();
    assert_send_sync::<Entry>();
    assert_send_sync::<cancelctx_timer::Stats>();
}
