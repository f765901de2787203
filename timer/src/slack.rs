//! Minimal timer slack for the timer thread: the crate's only `unsafe`.
//!
//! Linux lets the kernel delay a sleeping thread's timed wake-up by up to its
//! "timer slack" (50 µs by default) to batch wake-ups. The timer thread exists
//! to wake on time, so it asks for the minimum (1 ns). Elsewhere this is a
//! no-op.

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
