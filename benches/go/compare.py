#!/usr/bin/env python3
"""Side-by-side tables for docs/benchmarks.md from a Go run and criterion's files.

    # Rust, then Go, one right after the other; save Go's output
    cargo bench --bench go_benchmarks
    (cd "$(go env GOROOT)/src/context" && go test -run XXX -bench . -benchtime 300ms) > /tmp/go.txt
    (cd benches/go && GOFLAGS=-mod=mod go test -run XXX -bench . -benchtime 300ms) >> /tmp/go.txt
    python3 benches/go/compare.py go /tmp/go.txt
    # a run saved with `-- --save-baseline NAME` instead of criterion's `new`
    python3 benches/go/compare.py go --baseline NAME /tmp/go.txt

    # The ours/ group with and without the optional features
    cargo bench --bench go_benchmarks -- ours/ --save-baseline plain
    cargo bench --bench go_benchmarks --features metrics,tracing,registry -- ours/ --save-baseline features
    python3 benches/go/compare.py features plain features

    python3 benches/go/compare.py ours          # the ours/ medians of the last run

cancelctx figures are criterion's medians (median.point_estimate in
target/criterion/<id>/<baseline>/estimates.json; CARGO_TARGET_DIR is
respected), not the mean-based `time:` line criterion prints.
"""

import json
import math
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
if not TARGET.is_absolute():
    TARGET = ROOT / TARGET
CRITERION = TARGET / "criterion"

# Rows also shown without: each op spawns a task (a tokio task on a
# current-thread runtime, where Go starts a goroutine), so they measure the
# spawn as much as the lookup (see docs/benchmarks.md).
THREAD_SPAWN = "DeepValueNewGoRoutine/"


def criterion_dir(bench_id):
    """criterion stores group/function ids with '/' inside a function as '_'."""
    group, _, rest = bench_id.partition("/")
    return CRITERION / group / rest.replace("/", "_") if rest else CRITERION / group


def estimates_path(bench_id, baseline="new"):
    return criterion_dir(bench_id) / baseline / "estimates.json"


def median_ns(bench_id, baseline="new"):
    try:
        with open(estimates_path(bench_id, baseline)) as f:
            return json.load(f)["median"]["point_estimate"]
    except FileNotFoundError:
        return None


# Both sides of a ratio must come from one session, Rust right before Go
# (docs/benchmarks.md). A criterion result this much older or newer than the
# Go output is from another run (e.g. a filtered rerun left the other rows'
# `new` results from an earlier one).
SAME_SESSION_S = 15 * 60


def fmt_ns(ns):
    if ns is None:
        return "–"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    if ns >= 10:
        return f"{ns:.0f} ns"
    return f"{ns:.2f} ns"


def geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def go_results(paths):
    line = re.compile(r"^Benchmark(\S+?)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op")
    out = {}
    for p in paths:
        for text in Path(p).read_text().splitlines():
            m = line.match(text.strip())
            if m:
                out[m.group(1)] = float(m.group(2))
    return out


def cmd_go(paths, baseline="new"):
    go = go_results(paths)
    if not go:
        sys.exit("no Benchmark lines found")
    print("| benchmark | Go ns/op | cancelctx median | ratio Go/ours |")
    print("|---|---:|---:|---:|")
    ratios = {}
    for name, go_ns in go.items():
        ours = median_ns(name, baseline)
        ratio = go_ns / ours if ours else None
        if ratio:
            ratios[name] = ratio
        shown = "–" if ratio is None else (f"**{ratio:.2f}**" if ratio < 1 else f"{ratio:.2f}")
        print(f"| {name} | {fmt_ns(go_ns)} | {fmt_ns(ours)} | {shown} |")
    print()
    print("| set | rows | geomean Go/ours | slowest row |")
    print("|---|---:|---:|---|")
    for label, sel in [
        ("all", ratios),
        (f"without {THREAD_SPAWN}*", {n: r for n, r in ratios.items() if not n.startswith(THREAD_SPAWN)}),
        # The value lookups' misses are mostly the Bloom summary's work.
        ("without DeepValue*", {n: r for n, r in ratios.items() if not n.startswith("DeepValue")}),
    ]:
        if not sel:
            print(f"| {label} | 0 | – | – |")
            continue
        worst = min(sel, key=sel.get)
        print(f"| {label} | {len(sel)} | {geomean(list(sel.values())):.2f} | {worst} ({sel[worst]:.2f}) |")
    go_time = max(Path(p).stat().st_mtime for p in paths)
    stale = [
        n for n in ratios
        if abs(estimates_path(n, baseline).stat().st_mtime - go_time) > SAME_SESSION_S
    ]
    if stale:
        print(
            f"\nWARNING: {len(stale)} criterion results are more than {SAME_SESSION_S // 60} min "
            f"from the Go output's time, so not from the same session: {', '.join(stale)}",
            file=sys.stderr,
        )
    missing = [n for n in go if n not in ratios]
    if missing:
        print(f"\nno criterion result for: {', '.join(missing)}", file=sys.stderr)


def ours_ids():
    base = CRITERION / "ours"
    return sorted(p.name for p in base.iterdir() if p.is_dir() and p.name != "report") if base.is_dir() else []


def cmd_ours():
    print("| benchmark | median |")
    print("|---|---:|")
    for name in ours_ids():
        print(f"| `{name}` | {fmt_ns(median_ns('ours/' + name))} |")


def cmd_features(plain, features):
    print(f"| benchmark | default features ({plain}) | metrics,tracing,registry ({features}) | cost |")
    print("|---|---:|---:|---:|")
    for name in ours_ids():
        a, b = median_ns("ours/" + name, plain), median_ns("ours/" + name, features)
        if a is None or b is None:
            continue
        print(f"| `{name}` | {fmt_ns(a)} | {fmt_ns(b)} | {b - a:+.1f} ns ({b / a:.2f} x) |")


def main(argv):
    if len(argv) >= 4 and argv[:2] == ["go", "--baseline"]:
        cmd_go(argv[3:], argv[2])
    elif len(argv) >= 2 and argv[0] == "go":
        cmd_go(argv[1:])
    elif argv == ["ours"]:
        cmd_ours()
    elif len(argv) == 3 and argv[0] == "features":
        cmd_features(argv[1], argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
