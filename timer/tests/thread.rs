//! The real timer thread. Bounds are generous: this may run on a loaded
//! 2-core machine. Never-early checks are strict.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier, mpsc};
use std::time::{Duration, Instant};

use cancelctx_timer::{Entry, Timer};

const PATIENCE: Duration = Duration::from_secs(20);

/// Sends the dropping thread's name when dropped.
struct DropSignal(mpsc::Sender<Option<String>>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let name = std::thread::current().name().map(String::from);
        let _ = self.0.send(name);
    }
}

#[test]
fn fires_shortly_after_the_deadline_never_before() {
    let timer = Timer::new();
    let (tx, rx) = mpsc::channel();
    for ahead_ms in [1, 2, 3] {
        let at = Instant::now() + Duration::from_millis(ahead_ms);
        let tx = tx.clone();
        timer.schedule(at, move || tx.send((at, Instant::now())).unwrap());
    }
    for _ in 0..3 {
        let (at, fired) = rx.recv_timeout(PATIENCE).expect("entry did not fire");
        assert!(fired >= at, "fired {:?} early", at - fired);
    }
    let stats = timer.stats();
    assert_eq!((stats.fired, stats.armed), (3, 0));
    assert!(stats.worst_lateness < PATIENCE);
}

#[test]
fn callbacks_run_on_the_named_thread() {
    let timer = Timer::try_new().expect("spawn");
    let (tx, rx) = mpsc::channel();
    timer.schedule(Instant::now(), move || {
        tx.send(std::thread::current().name().map(String::from))
            .unwrap()
    });
    let name = rx.recv_timeout(PATIENCE).unwrap();
    assert_eq!(name.as_deref(), Some("cancelctx-timer"));
}

#[test]
fn earlier_deadline_wakes_a_thread_parked_on_a_far_one() {
    let timer = Timer::new();
    let _far = timer.schedule(Instant::now() + Duration::from_secs(3600), || {
        panic!("far entry fired")
    });
    // Let the thread start and park on the far deadline.
    std::thread::sleep(Duration::from_millis(50));
    let (tx, rx) = mpsc::channel();
    let at = Instant::now() + Duration::from_millis(2);
    let start = Instant::now();
    timer.schedule(at, move || tx.send(Instant::now()).unwrap());
    let fired = rx
        .recv_timeout(PATIENCE)
        .expect("parked thread was not woken");
    assert!(fired >= at);
    assert!(start.elapsed() < PATIENCE);
    assert_eq!(timer.stats().armed, 1);
}

#[test]
fn earlier_deadline_from_another_thread_wakes_the_parked_thread() {
    let timer = Timer::new();
    // Parked on a far entry scheduled from this thread (this thread's shard)...
    let _far = timer.schedule(Instant::now() + Duration::from_secs(3600), || {
        panic!("far entry fired")
    });
    std::thread::sleep(Duration::from_millis(50));
    // ...an earlier one from other threads (other shards, most likely) must
    // wake it, whichever shard it lands on.
    for ahead_ms in [3, 1, 2] {
        let timer = timer.clone();
        let fired = std::thread::spawn(move || {
            let (tx, rx) = mpsc::channel();
            let at = Instant::now() + Duration::from_millis(ahead_ms);
            let _entry = timer.schedule(at, move || tx.send(Instant::now()).unwrap());
            let fired = rx
                .recv_timeout(PATIENCE)
                .expect("parked thread was not woken");
            assert!(fired >= at);
        });
        fired.join().unwrap();
    }
    assert_eq!(timer.stats().armed, 1);
}

#[test]
fn steady_later_timeouts_do_not_wake_the_parked_thread() {
    let timer = Timer::new();
    let _earliest = timer.schedule(Instant::now() + Duration::from_secs(3600), || {});
    // Let the thread start and park on it.
    std::thread::sleep(Duration::from_millis(50));
    let before = timer.stats().wakeups;
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..10_000 {
                    let at = Instant::now() + Duration::from_secs(7200);
                    assert!(timer.schedule(at, || {}).cancel());
                }
            });
        }
    });
    let stats = timer.stats();
    assert_eq!(stats.wakeups, before, "later deadlines need no wake-up");
    assert_eq!((stats.armed, stats.canceled), (1, 20_000));
}

#[test]
fn past_deadline_fires_at_the_next_turn() {
    let timer = Timer::new();
    let (tx, rx) = mpsc::channel();
    let past = Instant::now();
    std::thread::sleep(Duration::from_millis(1));
    timer.schedule(past, move || tx.send(()).unwrap());
    rx.recv_timeout(PATIENCE).unwrap();
}

#[test]
fn panicking_callback_is_counted_and_later_deadlines_fire() {
    let timer = Timer::new();
    let now = Instant::now();
    timer.schedule(now, || panic!("boom (expected by the test)"));
    let (tx, rx) = mpsc::channel();
    timer.schedule(now + Duration::from_millis(5), move || tx.send(()).unwrap());
    rx.recv_timeout(PATIENCE)
        .expect("thread died with the panic");
    // The count is updated right after the panicking batch, before later
    // entries are taken.
    assert_eq!(timer.stats().panicked, 1);
    let (tx, rx) = mpsc::channel();
    timer.schedule(Instant::now(), move || tx.send(()).unwrap());
    rx.recv_timeout(PATIENCE)
        .expect("thread died with the panic");
}

#[test]
fn cancel_races_fire_exactly_once() {
    let timer = Timer::new();
    let ran = Arc::new(AtomicUsize::new(0));
    let mut canceled = 0;
    for i in 0..2_000u32 {
        let ran = Arc::clone(&ran);
        let at = Instant::now() + Duration::from_micros(u64::from(i % 50));
        let entry = timer.schedule(at, move || {
            ran.fetch_add(1, SeqCst);
        });
        if i % 3 == 0 {
            std::thread::yield_now();
        }
        canceled += usize::from(entry.cancel());
    }
    // Wait for everything not canceled to fire.
    let start = Instant::now();
    while timer.stats().armed > 0 || ran.load(SeqCst) + canceled < 2_000 {
        assert!(
            start.elapsed() < PATIENCE,
            "entries lost: {:?}",
            timer.stats()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(ran.load(SeqCst) + canceled, 2_000);
    let stats = timer.stats();
    assert_eq!(stats.fired as usize, ran.load(SeqCst));
    assert_eq!(stats.canceled as usize, canceled);
}

#[test]
fn many_threads_schedule_on_the_global_timer() {
    let threads = 4;
    let per_thread = 250;
    let barrier = Arc::new(Barrier::new(threads));
    let (tx, rx) = mpsc::channel();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let barrier = Arc::clone(&barrier);
            let tx = tx.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let mut kept: Vec<Entry> = Vec::new();
                for i in 0..per_thread {
                    let at = Instant::now() + Duration::from_micros(((t * 31 + i) % 400) as u64);
                    let tx = tx.clone();
                    let entry = Timer::global().schedule(at, move || tx.send(at).unwrap());
                    if i % 2 == 0 {
                        kept.push(entry);
                    }
                }
                kept
            })
        })
        .collect();
    drop(tx);
    let kept: Vec<Entry> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    for _ in 0..threads * per_thread {
        let at = rx.recv_timeout(PATIENCE).expect("lost an entry");
        assert!(Instant::now() >= at);
    }
    assert!(kept.iter().all(|e| !e.cancel()), "all fired already");
}

#[test]
fn fire_due_on_a_threaded_timer_runs_on_the_caller() {
    let timer = Timer::new();
    let at = Instant::now() + Duration::from_secs(3600);
    let (tx, rx) = mpsc::channel();
    let entry = timer.schedule(at, move || {
        tx.send(std::thread::current().name().map(String::from))
            .unwrap()
    });
    assert_eq!(timer.fire_due(at), 1);
    let name = rx.try_recv().expect("ran synchronously");
    assert_ne!(name.as_deref(), Some("cancelctx-timer"));
    assert!(!entry.cancel());
}

#[test]
fn thread_exits_when_the_last_handle_and_entry_are_gone() {
    let timer = Timer::new();
    let (tx, rx) = mpsc::channel();
    let guard = DropSignal(tx);
    let entry = timer.schedule(Instant::now() + Duration::from_secs(3600), move || {
        drop(guard);
    });
    // Make sure the thread is up.
    futures::executor::block_on(timer.sleep(Duration::from_millis(1)));
    drop(timer);
    // The entry still holds the timer: nothing is dropped yet.
    assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
    assert!(entry.is_pending());
    drop(entry);
    // Shutdown: the pending callback is dropped unrun, on the timer thread.
    let dropped_on = rx.recv_timeout(PATIENCE).expect("thread did not shut down");
    assert_eq!(dropped_on.as_deref(), Some("cancelctx-timer"));
}

#[test]
fn an_entry_keeps_a_dropped_timer_running() {
    let timer = Timer::new();
    let (tx, rx) = mpsc::channel();
    let entry = timer.schedule(Instant::now() + Duration::from_millis(5), move || {
        tx.send(()).unwrap()
    });
    drop(timer);
    rx.recv_timeout(PATIENCE)
        .expect("entry of a dropped timer did not fire");
    assert!(!entry.cancel());
}

#[test]
fn callback_may_drop_the_last_handle() {
    let timer = Timer::new();
    let (tx, rx) = mpsc::channel();
    let (gtx, grx) = mpsc::channel();
    let guard = DropSignal(gtx);
    timer.schedule(Instant::now() + Duration::from_secs(3600), move || {
        drop(guard)
    });
    let last = timer.clone();
    timer.schedule(Instant::now(), move || {
        drop(last); // shutdown requested from the timer thread itself
        tx.send(()).unwrap();
    });
    drop(timer);
    rx.recv_timeout(PATIENCE).unwrap();
    let dropped_on = grx
        .recv_timeout(PATIENCE)
        .expect("thread did not shut down");
    assert_eq!(dropped_on.as_deref(), Some("cancelctx-timer"));
}

#[test]
fn lazily_started_timer_without_entries_has_no_thread_work() {
    let timer = Timer::new();
    assert_eq!(timer.stats().wakeups, 0);
    assert_eq!(timer.next_deadline(), None);
    assert!(format!("{timer:?}").contains("manual: false"));
}

/// Not an assertion of precision (the machine may be loaded), just a report:
/// `cargo test -p cancelctx-timer --test thread -- --nocapture precision`.
#[test]
fn precision_report() {
    let timer = Timer::new();
    let mut late = Vec::new();
    for i in 0..50u64 {
        let at = Instant::now() + Duration::from_micros(500 + 37 * i);
        let (tx, rx) = mpsc::channel();
        timer.schedule(at, move || tx.send(Instant::now()).unwrap());
        let fired = rx.recv_timeout(PATIENCE).unwrap();
        assert!(fired >= at);
        late.push(fired - at);
    }
    late.sort();
    eprintln!(
        "lateness: min {:?}, median {:?}, p90 {:?}, max {:?}",
        late[0],
        late[late.len() / 2],
        late[late.len() * 9 / 10],
        late[late.len() - 1]
    );
}

/// The scheduling policy of the calling thread, from `/proc` (Linux): field
/// 41 of `/proc/thread-self/stat` (1 is `SCHED_FIFO`).
#[cfg(target_os = "linux")]
fn own_policy() -> u32 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // The command name (field 2) may hold spaces: count from after it.
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    after_name.split(' ').nth(41 - 3).unwrap().parse().unwrap()
}

#[test]
fn a_realtime_timer_fires_on_a_fifo_thread_or_says_why_not() {
    match Timer::try_with_realtime_priority(10) {
        Ok(timer) => {
            let (tx, rx) = mpsc::channel();
            let at = Instant::now() + Duration::from_millis(2);
            let _entry = timer.schedule(at, move || {
                #[cfg(target_os = "linux")]
                let policy = own_policy();
                #[cfg(not(target_os = "linux"))]
                let policy = 1;
                tx.send((Instant::now(), policy)).unwrap();
            });
            let (fired, policy) = rx.recv_timeout(PATIENCE).expect("fired");
            assert!(fired >= at, "never early");
            assert_eq!(policy, 1, "the callback runs under SCHED_FIFO");
        }
        // Without the privilege (or off Linux) the error says so.
        Err(err) => assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::Unsupported
            ),
            "unexpected error: {err}"
        ),
    }
}

#[test]
fn a_realtime_priority_outside_1_to_99_is_refused() {
    for priority in [0, 100, 255] {
        let err = Timer::try_with_realtime_priority(priority).unwrap_err();
        assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::Unsupported
            ),
            "priority {priority}: {err}"
        );
    }
}

/// Regression: a real-time timer's `SCHED_FIFO` leaked into every thread its callbacks
/// start: Linux threads inherit the creator's policy. So a callback that
/// makes the first schedule of a plain `Timer::new()` (or of the global
/// timer, or that starts `cancelctx`'s callback pool on a context's
/// deadline) gives that thread real-time priority too, which the docs
/// promise only for the one timer thread of `try_with_realtime_priority`.
#[cfg(target_os = "linux")]
#[test]
fn threads_started_by_a_realtime_timers_callbacks_are_not_realtime() {
    let Ok(rt) = Timer::try_with_realtime_priority(10) else {
        eprintln!("no permission for SCHED_FIFO here: nothing to check");
        return;
    };
    let (tx, rx) = mpsc::channel();
    let _entry = rt.schedule(Instant::now(), move || {
        let plain = Timer::new(); // lazy: its thread is spawned right here
        let (tx2, keep) = (tx.clone(), plain.clone());
        // The closure holds a handle, so the timer lives until it has fired.
        let entry = plain.schedule(Instant::now(), move || {
            tx2.send(("Timer::new()'s thread", own_policy())).unwrap();
            drop(keep);
        });
        drop(entry);
        let spawned = std::thread::spawn(own_policy).join().unwrap();
        tx.send(("a std::thread spawned by the callback", spawned))
            .unwrap();
    });
    for _ in 0..2 {
        let (who, policy) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(policy, 0, "{who} runs under SCHED_FIFO (policy {policy})");
    }
}
