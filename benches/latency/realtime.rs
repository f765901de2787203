//! Rows whose *global* timer thread runs under `SCHED_FIFO`
//! (`Timer::init_global(Timer::try_with_realtime_priority(..))`), the opt-in
//! for machines whose cores are all busy. The global timer is set once per
//! process, so these rows run in a child process: this same bench binary,
//! started with [`CHILD`] set, which installs the real-time timer, measures
//! one waiter and prints one sample per line.

use std::process::Command;
use std::time::Duration;

use cancelctx::timer::Timer;

use super::waiters::{self, Exec, Plan, blocking, on};

/// Set (to the waiter's name) in the child's environment.
pub(crate) const CHILD: &str = "CANCELCTX_LATENCY_REALTIME_CHILD";
const WARMUP: &str = "CANCELCTX_LATENCY_WARMUP_US";
const TIMEOUTS: &str = "CANCELCTX_LATENCY_TIMEOUTS_US";

/// The waiters a child can measure.
const WAITERS: [&str; 3] = ["wait_done", "done_futures", "spin_is_done"];

/// Measures `waiter` (one of [`WAITERS`]) in a child process.
pub(crate) fn run(waiter: &str, plan: &Plan) -> Result<Vec<f64>, String> {
    let list = |ds: &[Duration]| {
        ds.iter()
            .map(|d| d.as_micros().to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let out = Command::new(exe)
        .env(CHILD, waiter)
        .env(WARMUP, list(&plan.warmup))
        .env(TIMEOUTS, list(&plan.timeouts))
        .output()
        .map_err(|e| format!("the child process: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    // What the child said on the way (the CPU-bound row's count of spinners
    // that started after their deadline) belongs on this row's line.
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            l.parse::<f64>()
                .map_err(|e| format!("child sample {l:?}: {e}"))
        })
        .collect()
}

/// The child's whole life: exits with status 0 after printing the samples,
/// or 2 after printing why not.
pub(crate) fn child_main(waiter: &str) -> ! {
    let fail = |why: String| -> ! {
        eprintln!("{why}");
        std::process::exit(2)
    };
    let durations = |var: &str| -> Vec<Duration> {
        let list = std::env::var(var).unwrap_or_default();
        list.split(',')
            .filter(|s| !s.is_empty())
            .map(|s| Duration::from_micros(s.parse().expect("the parent writes integers")))
            .collect()
    };
    let plan = Plan {
        warmup: durations(WARMUP),
        timeouts: durations(TIMEOUTS),
    };
    match Timer::try_with_realtime_priority(10) {
        Ok(timer) => {
            if Timer::init_global(timer).is_err() {
                fail("the global timer existed before the child set it".to_owned());
            }
        }
        Err(e) => fail(format!("real-time priority refused: {e}")),
    }
    let samples = match waiter {
        "wait_done" => blocking(&plan, waiters::wait_done),
        "done_futures" => on(Exec::Futures, &plan, waiters::ctx_done),
        "spin_is_done" => waiters::spin_is_done(&plan),
        other => fail(format!(
            "unknown waiter {other:?}, expected one of {WAITERS:?}"
        )),
    };
    match samples {
        Ok(samples) => {
            for s in samples {
                println!("{s}");
            }
            std::process::exit(0)
        }
        Err(why) => fail(why),
    }
}
