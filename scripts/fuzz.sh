#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, ADR 0020) with clang in build-fuzz and runs them.
#
#   scripts/fuzz.sh [--time SECONDS] [--runs N] [-j JOBS] [--no-build] [TARGET...]
#
# --time      seconds per target (default 60); --runs N stops after N inputs instead, or
#             whichever comes first when both are given
# -j JOBS     targets run at once (default 1)
# --no-build  use the targets already in build-fuzz
# TARGET      names from build-fuzz/fuzz/targets.txt (task_spec, wire, ...); default: all
#
# Each target reads its committed seeds from fuzz/corpus/NAME and writes what it finds new to
# build-fuzz/fuzz-corpus/NAME, so the committed corpus changes only when someone copies
# inputs over on purpose. Crashes, leaks, timeouts and out-of-memory inputs land in
# build-fuzz/fuzz-findings/NAME/, the full log in build-fuzz/fuzz-logs/NAME.log. One summary
# line per target; the exit status is non-zero when any target reported a finding.
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir=${TAMMA_FUZZ_BUILD_DIR:-build-fuzz}
seconds=""
runs=""
jobs=1
build=1
targets=()
while [ $# -gt 0 ]; do
  case $1 in
    --time) seconds=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    -j) jobs=$2; shift 2 ;;
    -j*) jobs=${1#-j}; shift ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("${1%_fuzz}"); shift ;;
  esac
done
if [ -z "$seconds" ]; then
  # --runs alone: no time limit (libFuzzer's 0); neither: a minute each.
  if [ -n "$runs" ]; then seconds=0; else seconds=60; fi
fi

if [ "$build" = 1 ]; then
  # -O1 with assertions left on: nlohmann's JSON_ASSERTs catch misuse the fuzzer reaches.
  # Only the libraries the targets link are built; tests and benchmarks stay off.
  CC=clang CXX=clang++ cmake -G Ninja -S . -B "$build_dir" -DCMAKE_BUILD_TYPE= \
    -DCMAKE_CXX_FLAGS="-O1 -gline-tables-only" -DTAMMA_FUZZ=ON \
    -DTAMMA_BUILD_TESTS=OFF -DTAMMA_BUILD_BENCH=OFF >/dev/null
  build_targets=(fuzzers)
  [ ${#targets[@]} -eq 0 ] || build_targets=("${targets[@]/%/_fuzz}")
  cmake --build "$build_dir" -j 2 --target "${build_targets[@]}"
fi

[ -f "$build_dir/fuzz/targets.txt" ] || { echo "fuzz.sh: no $build_dir/fuzz/targets.txt" >&2; exit 2; }
mapfile -t known <"$build_dir/fuzz/targets.txt"
[ ${#targets[@]} -gt 0 ] || targets=("${known[@]}")
for t in "${targets[@]}"; do
  printf '%s\n' "${known[@]}" | grep -qx "$t" || { echo "fuzz.sh: unknown target $t" >&2; exit 2; }
done

# The largest input worth trying: a config file is small, reports and bodies can be large but
# 64 KiB reaches every branch; more only slows each run.
max_len_of() {
  case $1 in
    worker_config) echo 16384 ;;
    # A few pipelined requests; each run is a loopback connection, so shorter is faster.
    http_request) echo 8192 ;;
    *) echo 65536 ;;
  esac
}

# libFuzzer takes one dictionary: JSON's syntax joined with the target's member names.
dictionary_of() {
  local name=$1 out="$build_dir/fuzz-dict/$1.dict"
  mkdir -p "$build_dir/fuzz-dict"
  local parts=(fuzz/dict/json.dict)
  [ "$name" != junit ] || parts=(fuzz/dict/xml.dict)
  [ "$name" != lone_command ] || parts=()
  [ ! -f "fuzz/dict/$name.dict" ] || parts+=("fuzz/dict/$name.dict")
  cat "${parts[@]}" >"$out"
  echo "$out"
}

run_target() {
  local name=$1
  local corpus="$build_dir/fuzz-corpus/$name" findings="$build_dir/fuzz-findings/$name/"
  local log="$build_dir/fuzz-logs/$name.log"
  mkdir -p "$corpus" "$findings" "$(dirname "$log")"
  local limits=(-max_total_time="$seconds")
  [ -z "$runs" ] || limits+=(-runs="$runs")
  local start=$SECONDS status=0
  # The scratch corpus comes first: libFuzzer writes new inputs to its first directory only.
  "$build_dir/fuzz/${name}_fuzz" "${limits[@]}" -max_len="$(max_len_of "$name")" \
    -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 -dict="$(dictionary_of "$name")" \
    -artifact_prefix="$findings" "$corpus" "fuzz/corpus/$name" >"$log" 2>&1 || status=$?
  local elapsed=$((SECONDS - start))
  local execs rate corpus_size found
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  # The inputs libFuzzer holds at the end, seeds included: "corp: 123/45Kb" of its last status.
  corpus_size=$(grep -o 'corp: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  found=$(find "$findings" -maxdepth 1 -type f \
    \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
  printf '%-15s execs %10s  exec/s %6s  seconds %5s  corpus %5s  findings %s%s\n' "$name" \
    "${execs:-?}" "${rate:-?}" "$elapsed" "${corpus_size:-?}" "$found" \
    "$([ "$status" = 0 ] || echo "  FAILED (exit $status, see $log)")"
  return "$status"
}

export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
failed=0
running=0
for t in "${targets[@]}"; do
  if [ "$running" -ge "$jobs" ]; then
    wait -n || failed=1
    running=$((running - 1))
  fi
  run_target "$t" &
  running=$((running + 1))
done
while [ "$running" -gt 0 ]; do
  wait -n || failed=1
  running=$((running - 1))
done
exit "$failed"
