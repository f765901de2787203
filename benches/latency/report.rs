//! Percentiles, the printed table, the goal checks, and the CSV and SVG files.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{
    CAP, Condition, FLOOR, GO_BUSY, GO_DONE, SPIN_CLOCK, SPIN_FLOOR, SPIN_IS_DONE, SPIN_TOKIO,
    TOKIO_SLEEP, WAIT_DONE,
};

/// One measured row: sorted samples in µs (`INFINITY` = capped, negative =
/// before the deadline).
pub(crate) struct Measured {
    name: &'static str,
    condition: Condition,
    samples: Vec<f64>,
    /// Cores' worth of CPU other processes used while the row ran.
    others: Option<f64>,
}

impl Measured {
    pub(crate) fn new(
        name: &'static str,
        condition: Condition,
        mut samples: Vec<f64>,
        others: Option<f64>,
    ) -> Measured {
        assert!(!samples.is_empty(), "{name}: no samples");
        samples.sort_by(f64::total_cmp);
        Measured {
            name,
            condition,
            samples,
            others,
        }
    }

    /// Nearest-rank percentile.
    fn pct(&self, p: f64) -> f64 {
        let n = self.samples.len();
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        self.samples[rank.clamp(1, n) - 1]
    }

    fn max(&self) -> f64 {
        self.samples[self.samples.len() - 1]
    }

    fn capped(&self) -> usize {
        self.samples.iter().filter(|s| s.is_infinite()).count()
    }

    /// Samples that ran before their deadline.
    fn early(&self) -> usize {
        self.samples.iter().filter(|&&s| s < 0.0).count()
    }

    fn stats(&self) -> [f64; 4] {
        [self.pct(50.0), self.pct(90.0), self.pct(99.0), self.max()]
    }
}

fn cap_us() -> f64 {
    CAP.as_secs_f64() * 1e6
}

/// A table cell: `>=50000` for a capped value.
fn cell(v: f64) -> String {
    if v.is_infinite() {
        format!(">={:.0}", cap_us())
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

pub(crate) fn print_table(rows: &[Measured]) {
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(6) + 2;
    println!(
        "{:<width$} {:>8} {:>8} {:>8} {:>8} {:>7}",
        "waiter", "p50", "p90", "p99", "max", "others"
    );
    for condition in Condition::ALL {
        let mut first = true;
        for r in rows.iter().filter(|r| r.condition == condition) {
            if first {
                println!("{}", condition.label());
                first = false;
            }
            let [p50, p90, p99, max] = r.stats().map(cell);
            let capped = r.capped();
            let mut note = if capped > 0 {
                format!(
                    "  capped: {capped}/{} samples >= {:.0} µs",
                    r.samples.len(),
                    cap_us()
                )
            } else {
                String::new()
            };
            if r.early() > 0 {
                let _ = write!(
                    note,
                    "  EARLY: {}/{} samples before the deadline",
                    r.early(),
                    r.samples.len()
                );
            }
            let others = r
                .others
                .map_or_else(|| "?".to_owned(), |c| format!("{c:.2}"));
            println!(
                "  {:<w$} {p50:>8} {p90:>8} {p99:>8} {max:>8} {others:>7}{note}",
                r.name,
                w = width - 2
            );
        }
    }
}

fn find<'a>(rows: &'a [Measured], condition: Condition, name: &str) -> Option<&'a Measured> {
    rows.iter()
        .find(|r| r.condition == condition && r.name == name)
}

/// Prints the goals of `docs/benchmarks.md` that this run's rows can check,
/// each with what the floor (a thread sleeping with 1 ns timer slack, no
/// timer thread, no cross-thread wake-up) reached in the same run.
pub(crate) fn print_goals(rows: &[Measured]) {
    use Condition::{CpuBound, Idle, Saturated};
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let ours = find(rows, Idle, WAIT_DONE);
    let floor = find(rows, Idle, FLOOR);
    let floor_says =
        |p: f64| floor.map_or(String::new(), |f| format!("; floor {} µs", cell(f.pct(p))));
    println!("goals (from docs/benchmarks.md):");
    if let (Some(o), Some(f)) = (ours, floor) {
        let ratio = o.pct(50.0) / f.pct(50.0);
        println!(
            "  idle: wait_done p50 {} µs = {ratio:.2} x the floor's {} µs (goal <= 2x): {}",
            cell(o.pct(50.0)),
            cell(f.pct(50.0)),
            verdict(ratio <= 2.0)
        );
    }
    if let Some(o) = ours {
        let p99 = o.pct(99.0);
        println!(
            "  idle: wait_done p99 {} µs (goal <= 100 µs{}): {}",
            cell(p99),
            floor_says(99.0),
            verdict(p99 <= 100.0)
        );
    }
    for (other, label) in [
        (TOKIO_SLEEP, "tokio sleep_until"),
        (GO_DONE, "Go <-ctx.Done()"),
    ] {
        if let (Some(o), Some(t)) = (ours, find(rows, Idle, other)) {
            let ratio = t.pct(50.0) / o.pct(50.0);
            let of_floor = floor.map_or(String::new(), |f| {
                format!(
                    "; the floor itself is {:.1} x below it",
                    t.pct(50.0) / f.pct(50.0)
                )
            });
            println!(
                "  idle: {label} p50 {} µs = {ratio:.1} x wait_done's (goal >= 20x{of_floor}): {}",
                cell(t.pct(50.0)),
                verdict(ratio >= 20.0)
            );
        }
    }
    if let (Some(o), Some(g)) = (
        find(rows, Saturated, WAIT_DONE),
        find(rows, Saturated, GO_BUSY),
    ) {
        let ratio = g.pct(99.0) / o.pct(99.0);
        let floor = find(rows, Saturated, FLOOR).map_or(String::new(), |f| {
            format!("; floor p99 {} µs", cell(f.pct(99.0)))
        });
        println!(
            "  saturated: Go p99 {} µs = {ratio:.1} x wait_done's p99 {} µs (goal >= 10x{floor}): {}",
            cell(g.pct(99.0)),
            cell(o.pct(99.0)),
            verdict(ratio >= 10.0)
        );
    }
    if let Some(s) = find(rows, CpuBound, SPIN_IS_DONE) {
        let p99 = s.pct(99.0);
        // This condition's own floors if they ran, else the idle one.
        let floors: Vec<String> = [
            (SPIN_FLOOR, "a sleeping thread's flag"),
            (SPIN_CLOCK, "the workers' own clock"),
        ]
        .into_iter()
        .filter_map(|(name, what)| {
            find(rows, CpuBound, name).map(|f| format!("{what} {} µs", cell(f.pct(99.0))))
        })
        .collect();
        let floor = if floors.is_empty() {
            // Named as what it is: the idle condition's floor.
            floor.map_or(String::new(), |f| {
                format!("; idle floor {} µs", cell(f.pct(99.0)))
            })
        } else {
            format!("; this condition's floors: {}", floors.join(", "))
        };
        println!(
            "  CPU-bound: a spinning worker sees is_done() {} µs after the deadline at p99 \
             (goal <= 100 µs{floor}): {}",
            cell(p99),
            verdict(p99 <= 100.0)
        );
    }
    if let Some(t) = find(rows, CpuBound, SPIN_TOKIO) {
        println!(
            "  CPU-bound: tokio is_elapsed() still false {:.0} µs after the deadline in {}/{} samples \
             (expected: all): {}",
            cap_us(),
            t.capped(),
            t.samples.len(),
            verdict(t.capped() == t.samples.len())
        );
    }
    let ours: Vec<&Measured> = rows
        .iter()
        .filter(|r| r.name.starts_with("cancelctx"))
        .collect();
    let early: Vec<String> = ours
        .iter()
        .filter(|r| r.early() > 0)
        .map(|r| format!("{} ({}/{})", r.name, r.early(), r.samples.len()))
        .collect();
    println!(
        "  never early: {} cancelctx rows, samples before their deadline: {}: {}",
        ours.len(),
        if early.is_empty() {
            "none".to_owned()
        } else {
            early.join(", ")
        },
        verdict(early.is_empty())
    );
}

/// Writes `latency.csv`, `latency_samples.csv` and `latency.svg` into `dir`.
pub(crate) fn write_files(dir: &Path, rows: &[Measured]) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut table = String::from(
        "condition,waiter,samples,p50_us,p90_us,p99_us,max_us,capped_samples,early_samples,others_cores\n",
    );
    let mut raw = String::from("condition,waiter,lateness_us\n");
    for r in rows {
        // A capped value is written as the cap; `capped_samples` says how many.
        let [p50, p90, p99, max] = r
            .stats()
            .map(|v| if v.is_infinite() { cap_us() } else { v });
        let _ = writeln!(
            table,
            "{},\"{}\",{},{p50:.1},{p90:.1},{p99:.1},{max:.1},{},{},{}",
            r.condition.key(),
            r.name,
            r.samples.len(),
            r.capped(),
            r.early(),
            r.others.map_or_else(String::new, |c| format!("{c:.2}"))
        );
        for s in &r.samples {
            let v = if s.is_infinite() {
                "inf".to_owned()
            } else {
                format!("{s:.1}")
            };
            let _ = writeln!(raw, "{},\"{}\",{v}", r.condition.key(), r.name);
        }
    }
    let files = [
        ("latency.csv", table),
        ("latency_samples.csv", raw),
        ("latency.svg", svg(rows)),
    ];
    let mut paths = Vec::new();
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text)?;
        paths.push(path);
    }
    Ok(paths)
}

// ---------------------------------------------------------------------------
// SVG: one panel per condition, one CDF line per waiter, log-scale x axis.

const PANEL_W: f64 = 1340.0;
const PLOT_X0: f64 = 70.0;
const PLOT_X1: f64 = 610.0;
const LEGEND_X: f64 = 640.0;
const LEGEND_DY: f64 = 17.0;
/// The x axis spans 10^0 .. 10^5 µs (1 µs .. 100 ms).
const DECADES: f64 = 5.0;

/// Distinct colors (Tableau 20), by the waiter's first appearance.
const PALETTE: [&str; 20] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#393b79", "#dbdb8d", "#9edae5",
];

fn x_of(us: f64) -> f64 {
    let decade = us.max(1.0).log10().clamp(0.0, DECADES);
    PLOT_X0 + (PLOT_X1 - PLOT_X0) * decade / DECADES
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Line style by family: cancelctx solid, Go thick, the floor gray dotted,
/// the other timers dashed.
fn style(name: &str, color: &str) -> String {
    if name.starts_with("cancelctx") {
        format!(r#"stroke="{color}" stroke-width="2""#)
    } else if name.starts_with("Go ") {
        format!(r#"stroke="{color}" stroke-width="3.5" stroke-dasharray="1 0""#)
    } else if name.starts_with("floor") {
        format!(r#"stroke="{color}" stroke-width="2" stroke-dasharray="2 3""#)
    } else {
        format!(r#"stroke="{color}" stroke-width="2" stroke-dasharray="7 4""#)
    }
}

fn svg(rows: &[Measured]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for r in rows {
        if !names.contains(&r.name) {
            names.push(r.name);
        }
    }
    let color = |name: &str| {
        if name.starts_with("Go ") {
            "#000000"
        } else {
            let i = names.iter().position(|n| *n == name).unwrap_or(0);
            PALETTE[i % PALETTE.len()]
        }
    };

    let mut body = String::new();
    let mut top = 10.0;
    for condition in Condition::ALL {
        let panel: Vec<&Measured> = rows.iter().filter(|r| r.condition == condition).collect();
        if panel.is_empty() {
            continue;
        }
        let legend_h = LEGEND_DY * panel.len() as f64;
        let plot_h = legend_h.max(240.0);
        let (y0, y1) = (top + 40.0, top + 40.0 + plot_h); // plot top, bottom
        let y_of = |frac: f64| y1 - (y1 - y0) * frac;
        let _ = writeln!(
            body,
            r#"<text x="{PLOT_X0}" y="{:.1}" font-size="15" font-weight="bold">{}</text>"#,
            top + 22.0,
            escape(&condition.label())
        );
        // Grid and axes.
        for d in 0..=DECADES as u32 {
            let us = 10f64.powi(d as i32);
            let x = x_of(us);
            let label = match d {
                0..=2 => format!("{us:.0} µs"),
                _ => format!("{:.0} ms", us / 1000.0),
            };
            let _ = writeln!(
                body,
                r##"<line x1="{x:.1}" y1="{y0:.1}" x2="{x:.1}" y2="{y1:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle">{label}</text>"##,
                y1 + 15.0
            );
            if d < DECADES as u32 {
                for m in 2..10 {
                    let xm = x_of(us * f64::from(m));
                    let _ = writeln!(
                        body,
                        r##"<line x1="{xm:.1}" y1="{y0:.1}" x2="{xm:.1}" y2="{y1:.1}" stroke="#f2f2f2"/>"##
                    );
                }
            }
        }
        for frac in [0.0, 0.25, 0.5, 0.75, 0.9, 1.0] {
            let y = y_of(frac);
            let _ = writeln!(
                body,
                r##"<line x1="{PLOT_X0}" y1="{y:.1}" x2="{PLOT_X1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{frac}</text>"##,
                PLOT_X0 - 5.0,
                y + 4.0
            );
        }
        let _ = writeln!(
            body,
            r##"<rect x="{PLOT_X0}" y="{y0:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#444"/>"##,
            PLOT_X1 - PLOT_X0,
            y1 - y0
        );
        let _ = writeln!(
            body,
            r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">lateness after the deadline (log scale)</text>"#,
            (PLOT_X0 + PLOT_X1) / 2.0,
            y1 + 32.0
        );
        let _ = writeln!(
            body,
            r#"<text x="18" y="{:.1}" font-size="12" text-anchor="middle" transform="rotate(-90 18 {:.1})">fraction of samples</text>"#,
            (y0 + y1) / 2.0,
            (y0 + y1) / 2.0
        );
        // Cap marker.
        let xc = x_of(cap_us());
        let _ = writeln!(
            body,
            r##"<line x1="{xc:.1}" y1="{y0:.1}" x2="{xc:.1}" y2="{y1:.1}" stroke="#999" stroke-dasharray="3 3"/>"##
        );

        // The CDFs (steps) and the legend.
        for (i, r) in panel.iter().enumerate() {
            let c = color(r.name);
            let n = r.samples.len() as f64;
            let mut points = format!("{:.1},{:.1}", PLOT_X0, y_of(0.0));
            let mut last_y = y_of(0.0);
            for (k, &s) in r.samples.iter().enumerate() {
                if s.is_infinite() {
                    break;
                }
                let x = x_of(s);
                let y = y_of((k + 1) as f64 / n);
                let _ = write!(points, " {x:.1},{last_y:.1} {x:.1},{y:.1}");
                last_y = y;
            }
            if r.capped() > 0 {
                let _ = write!(points, " {xc:.1},{last_y:.1}");
                let _ = writeln!(
                    body,
                    r#"<path d="M{:.1},{:.1} l8,-5 l0,10 z" fill="{c}"/><text x="{:.1}" y="{:.1}" font-size="10" fill="{c}">capped</text>"#,
                    xc,
                    last_y,
                    xc + 10.0,
                    last_y - 8.0
                );
            }
            let _ = writeln!(
                body,
                r#"<polyline points="{points}" fill="none" {}/>"#,
                style(r.name, c)
            );
            let ly = y0 + 6.0 + LEGEND_DY * i as f64;
            let [p50, _, p99, _] = r.stats().map(cell);
            let mut capped = if r.capped() > 0 {
                format!(", {}/{} capped", r.capped(), r.samples.len())
            } else {
                String::new()
            };
            if r.early() > 0 {
                let _ = write!(capped, ", {}/{} early", r.early(), r.samples.len());
            }
            let _ = writeln!(
                body,
                r#"<line x1="{LEGEND_X}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" {}/><text x="{:.1}" y="{:.1}" font-size="11">{} (p50 {p50}, p99 {p99} µs{capped})</text>"#,
                LEGEND_X + 28.0,
                style(r.name, c),
                LEGEND_X + 34.0,
                ly + 4.0,
                escape(r.name)
            );
        }
        top = y1 + 50.0;
    }
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{PANEL_W}" height="{top:.0}" viewBox="0 0 {PANEL_W} {top:.0}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<title>cancelctx: wake-up lateness CDFs</title>
{body}</svg>
"#
    )
}

// Run with `cargo rustc --profile bench --bench latency -- --test` and the
// binary it builds: `harness = false` keeps `cargo test` from running them,
// and the bench build compiles this module without its `#[test]`s.
#[cfg(test)]
#[allow(dead_code)]
mod tests {
    use super::*;

    fn row(samples: Vec<f64>) -> Measured {
        Measured::new("t", Condition::Idle, samples, None)
    }

    /// Nearest rank: the smallest sample with at least p % of the samples at
    /// or below it, by integer arithmetic.
    fn rank(p: u32, n: usize) -> usize {
        (p as usize * n).div_ceil(100).max(1)
    }

    #[test]
    fn percentiles_are_nearest_rank_for_every_size() {
        for n in 1..=2_000 {
            // Samples n..=1 (sorted by Measured::new): sample k is the k-th smallest.
            let mut s: Vec<f64> = (1..=n).map(|k| k as f64).collect();
            s.reverse();
            let r = row(s);
            for p in [50, 90, 99] {
                assert_eq!(r.pct(f64::from(p)), rank(p, n) as f64, "p{p} of {n}");
            }
            assert_eq!(r.max(), n as f64);
        }
        // 400 samples: p99 is the 396th smallest (4 above it); 40: the max.
        let r = row((1..=400).map(f64::from).collect());
        assert_eq!(r.pct(99.0), 396.0);
        let r = row((1..=40).map(f64::from).collect());
        assert_eq!(r.pct(99.0), 40.0);
    }

    #[test]
    fn early_and_capped_samples_are_counted_and_sorted_to_the_ends() {
        let r = row(vec![5.0, f64::INFINITY, -2.0, 7.0]);
        assert_eq!(r.samples, [-2.0, 5.0, 7.0, f64::INFINITY]);
        assert_eq!((r.early(), r.capped()), (1, 1));
        assert_eq!(cell(r.max()), ">=50000");
    }
}
