//! `Timer::init_global`: alone in its binary, so that nothing has created the
//! global timer before it runs.
#![cfg(not(loom))]

use std::sync::mpsc;
use std::time::{Duration, Instant};

use cancelctx_timer::Timer;

#[test]
fn init_global_installs_the_timer_once() {
    let mine = Timer::try_with_realtime_priority(10).or_else(|_| Timer::try_new());
    let mine = mine.expect("a timer thread");
    let installed = Timer::init_global(mine).expect("no global timer exists yet");
    assert!(std::ptr::eq(installed, Timer::global()));

    // A second one is handed back.
    assert!(Timer::init_global(Timer::manual()).is_err());

    // And the installed one drives the global entries.
    let (tx, rx) = mpsc::channel();
    let at = Instant::now() + Duration::from_millis(1);
    let _entry = Timer::global().schedule(at, move || tx.send(Instant::now()).unwrap());
    let fired = rx.recv_timeout(Duration::from_secs(20)).expect("fired");
    assert!(fired >= at);
}
