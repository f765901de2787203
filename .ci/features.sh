#!/usr/bin/env bash
# Feature hygiene for the `cancelctx` package:
#
# 1. The default build depends on no async runtime (tokio, async-std, smol,
#    async-io, ...), checked on `cargo tree` of its normal dependencies.
# 2. The opt-in `tokio-util` feature brings tokio with neither a runtime nor
#    its time driver.
# 3. Every combination of the features builds: `cargo check` of the library
#    over the powerset, and of every target (tests, examples, benches) with
#    no feature and with all of them; the features are read from Cargo.toml's
#    `[features]` table at run time, so a new feature is covered without
#    editing this script.
#
# Exits non-zero on the first failure, a warning included. Set FEATURES_MAX_DEPTH=N to check only
# combinations of at most N features (default: all of them).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
start=$SECONDS

# --- 1. no runtime in the default build -------------------------------------
runtimes='tokio|tokio-stream|async-std|async-global-executor|async-executor|async-io|smol|glommio|monoio|actix-rt'
default_deps=$(cargo tree -p cancelctx -e normal --no-default-features --prefix none --format '{p}')
if offenders=$(grep -E "^($runtimes) v" <<<"$default_deps"); then
  echo "error: the default build of cancelctx depends on an async runtime:" >&2
  echo "$offenders" >&2
  exit 1
fi
echo "ok: no async runtime in the default build's dependencies"

# --- 2. the tokio-util feature: tokio's sync only ---------------------------
if grep -qE '^tokio-util *=' <(sed -n '/^\[features\]/,/^\[/p' Cargo.toml); then
  tokio_features=$(cargo tree -p cancelctx -e normal,features --no-default-features \
    --features tokio-util -i tokio --prefix none --format '{p}')
  if offenders=$(grep -E '^tokio feature "(rt|rt-multi-thread|time|full|net|io-util)"' <<<"$tokio_features"); then
    echo "error: feature tokio-util pulls in more of tokio than its sync module:" >&2
    echo "$offenders" >&2
    exit 1
  fi
  echo "ok: feature tokio-util brings tokio without a runtime or time driver"
fi

# --- 3. every feature combination builds ------------------------------------
# Keys of the [features] table, in file order, minus `default`.
mapfile -t features < <(
  awk '
    /^\[/ { in_features = ($0 ~ /^\[features\][[:space:]]*$/); next }
    in_features && /^[A-Za-z0-9_-]+[[:space:]]*=/ {
      name = $0; sub(/[[:space:]]*=.*/, "", name)
      if (name != "default") print name
    }
  ' Cargo.toml
)
n=${#features[@]}
if [ "$n" -eq 0 ]; then
  echo "error: no features found in Cargo.toml's [features] table" >&2
  exit 1
fi
max_depth=${FEATURES_MAX_DEPTH:-$n}
echo "features ($n): ${features[*]}; checking $((1 << n)) combinations (at most $max_depth features each)"

checked=0
for ((mask = 0; mask < (1 << n); mask++)); do
  combo=()
  for ((i = 0; i < n; i++)); do
    if ((mask & (1 << i))); then
      combo+=("${features[i]}")
    fi
  done
  if [ "${#combo[@]}" -gt "$max_depth" ]; then
    continue
  fi
  list=$(IFS=,; echo "${combo[*]}")
  # Feature-gated code lives in the library: every combination checks it;
  # all targets (tests, examples, benches) are checked with none and with
  # every feature, which covers each `required-features` target once.
  targets=--lib
  if [ "$mask" -eq 0 ] || [ "$mask" -eq $(((1 << n) - 1)) ]; then
    targets=--all-targets
  fi
  echo "== cargo check $targets --features '${list}' ($((SECONDS - start)) s)"
  # A warning that only some combination shows (an import unused without a
  # feature, say) fails too. Cargo replays cached warnings, so a re-run
  # still sees them.
  if ! out=$(cargo check --quiet -p cancelctx --no-default-features --features "$list" $targets 2>&1); then
    echo "$out" >&2
    echo "error: cancelctx does not build with --no-default-features --features '$list'" >&2
    exit 1
  fi
  if grep -qE '^(warning|error)' <<<"$out"; then
    echo "$out" >&2
    echo "error: warnings with --no-default-features --features '$list'" >&2
    exit 1
  fi
  checked=$((checked + 1))
done

echo "ok: $checked feature combinations build ($((SECONDS - start)) s)"
