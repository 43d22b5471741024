#!/usr/bin/env bash
# Runs every cargo-fuzz target (or the ones named) for a bounded time and fails if any crashes.
#
#   fuzz/run-bounded.sh [SECONDS] [TARGET...]      # SECONDS per target, default 30
#
# Needs cargo-fuzz and a toolchain that accepts nightly flags (a nightly toolchain, or stable with
# RUSTC_BOOTSTRAP=1, which this script sets). Without them it prints "skipped: ..." and exits 0,
# so CI can call it unconditionally. New inputs go to a scratch directory, never to the committed
# seeds in fuzz/corpus/<target>/; a crash is saved under fuzz/artifacts/<target>/ (reproduce it
# with `cargo fuzz run <target> <file>`; see fuzz/README.md).
set -euo pipefail

seconds="${1:-30}"
shift || true
case "$seconds" in
  '' | *[!0-9]* | 0)
    # (libFuzzer reads -max_total_time=0 as "no limit".)
    echo "usage: $0 [SECONDS] [TARGET...]  (SECONDS must be a positive whole number, got '$seconds')" >&2
    exit 2
    ;;
esac

cd "$(dirname "$0")"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "skipped: cargo-fuzz not installed (cargo install cargo-fuzz)"
  exit 0
fi

export RUSTC_BOOTSTRAP=1
probe="$(mktemp -d)"
trap 'rm -rf "$probe"' EXIT
echo 'fn main() {}' >"$probe/probe.rs"
if ! rustc -Zsanitizer=address -o "$probe/probe" "$probe/probe.rs" >/dev/null 2>&1; then
  echo "skipped: the Rust toolchain does not accept -Zsanitizer=address (nightly flags), which cargo-fuzz needs"
  exit 0
fi

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

echo "== building the fuzz targets"
if ! cargo fuzz build -O >"$probe/build.log" 2>&1; then
  tail -n 40 "$probe/build.log"
  echo "the fuzz targets do not build" >&2
  exit 1
fi

failed=()
for target in "${targets[@]}"; do
  echo "== $target: ${seconds}s"
  scratch="$probe/corpus-$target"
  mkdir -p "$scratch"
  seeds=()
  if [ -d "corpus/$target" ]; then
    seeds=("corpus/$target")
  fi
  log="$probe/$target.log"
  # -timeout: one input taking over a minute is a hang, and a failure.
  if cargo fuzz run -O "$target" "$scratch" "${seeds[@]}" -- \
    -max_total_time="$seconds" -timeout=60 -print_final_stats=1 >"$log" 2>&1; then
    grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true
    grep -E '^Done [0-9]+ runs' "$log" | tail -n 1 || true
  else
    failed+=("$target")
    echo "!! $target failed; the end of its log:"
    tail -n 40 "$log"
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzzing found failures in: ${failed[*]} (inputs saved under fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzzing: no crashes in ${#targets[@]} targets (${seconds}s each)"
