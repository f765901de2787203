//! How the OS schedules the timer thread: the crate's only `unsafe`.
//!
//! Linux lets the kernel delay a sleeping thread's timed wake-up by up to its
//! "timer slack" (50 µs by default) to batch wake-ups. The timer thread exists
//! to wake on time, so it asks for the minimum (1 ns). Elsewhere this is a
//! no-op.
//!
//! On request ([`Timer::try_with_realtime_priority`]) the thread also asks
//! for the real-time `SCHED_FIFO` policy, so that a passed deadline preempts
//! normal threads at once instead of waiting for the CPU scheduler.
//!
//! [`Timer::try_with_realtime_priority`]: crate::Timer::try_with_realtime_priority

use std::io;

/// Sets the calling thread's timer slack to 1 ns (Linux only; best effort).
#[cfg(target_os = "linux")]
pub(crate) fn minimize() {
    // SAFETY: `prctl(PR_SET_TIMERSLACK, n)` takes plain integer arguments,
    // reads and writes no memory of this process, and only changes the
    // calling thread's timer slack. Failure (never expected for this option)
    // is reported through the return value, which is ignored: the thread
    // merely keeps the default slack.
    let _ = unsafe {
        libc::prctl(
            libc::PR_SET_TIMERSLACK,
            1 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
}

/// No timer slack control on this platform.
#[cfg(not(target_os = "linux"))]
pub(crate) fn minimize() {}

/// Puts the calling thread under `SCHED_FIFO` at `priority` (1..=99), with
/// `SCHED_RESET_ON_FORK`: threads it starts (a callback's first schedule on
/// a lazy timer, a thread pool spawned on a deadline) get the normal policy
/// instead of inheriting the real-time one.
#[cfg(target_os = "linux")]
pub(crate) fn set_realtime(priority: u8) -> io::Result<()> {
    if !(1..=99).contains(&priority) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cancelctx-timer: real-time priority {priority} is outside 1..=99"),
        ));
    }
    let param = libc::sched_param {
        sched_priority: libc::c_int::from(priority),
    };
    // SAFETY: `pthread_self()` is always a valid handle to the calling
    // thread, and `param` is a valid, initialized `sched_param` that outlives
    // the call, which only reads it. The function changes only the calling
    // thread's scheduling policy and reports failure through its return
    // value (an errno value, not `errno`).
    let rc = unsafe {
        libc::pthread_setschedparam(
            libc::pthread_self(),
            libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK,
            &param,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// No real-time policy on this platform.
#[cfg(not(target_os = "linux"))]
pub(crate) fn set_realtime(_priority: u8) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "cancelctx-timer: real-time priority is only supported on Linux",
    ))
}
