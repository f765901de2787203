//! How much CPU other processes took during a measurement (shared by the
//! `latency` and `scale` benches): on a shared machine, the noise a row saw.

use std::time::Instant;

/// CPU time, in clock ticks: the machine's busy time (`/proc/stat`, not
/// idle or iowait), and this process's own, reaped children (the Go
/// program) included (`/proc/self/stat`). Their difference over a row is the
/// CPU that other processes took meanwhile: the noise the row saw.
#[derive(Clone, Copy)]
pub(crate) struct CpuTicks {
    busy: u64,
    own: u64,
    at: Instant,
}

impl CpuTicks {
    /// Ticks per second (`USER_HZ`, 100 on Linux).
    const HZ: f64 = 100.0;

    pub(crate) fn now() -> Option<CpuTicks> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        // user nice system idle iowait irq softirq steal ...
        let busy = cpu.iter().take(8).sum::<u64>() - cpu.get(3)? - cpu.get(4)? - cpu.get(7)?;
        let own_stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let fields: Vec<u64> = own_stat
            .rsplit_once(") ")?
            .1
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        // utime stime cutime cstime: fields 14-17, here from field 3 on.
        let own = fields.get(11..15)?.iter().sum();
        Some(CpuTicks {
            busy,
            own,
            at: Instant::now(),
        })
    }

    /// Cores' worth of CPU other processes used since `self`.
    pub(crate) fn others_since(self) -> Option<f64> {
        let now = CpuTicks::now()?;
        let others = now
            .busy
            .saturating_sub(self.busy)
            .saturating_sub(now.own - self.own);
        Some(others as f64 / Self::HZ / now.at.duration_since(self.at).as_secs_f64())
    }
}
