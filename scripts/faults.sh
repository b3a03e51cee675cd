#!/usr/bin/env bash
# The fault-injection suite (tests/faults, issue 16), long version: real orchestrator and worker
# daemons through network delay/loss and partitions, orchestrator stalls, kills, full and frozen
# disks, and broken worker hosts; one line per fault:
#
#   [faults] <name>: submitted=N succeeded=N retried=N lost=N doubled=N logs_incomplete=N
#            artifacts_bad=N recovery_ms=N
#
# Usage: scripts/faults.sh [--short] [--build-dir DIR] [GTEST_ARGS...]
#   --short          the short version instead (what ctest runs: tens of seconds per fault)
#   --build-dir DIR  build there (default: build, configured RelWithDebInfo if new)
#   GTEST_ARGS       e.g. --gtest_filter='Faults.Partition:Faults.OrchestratorDown'
# Environment: TAMMA_FAULTS_JOBS (build parallelism, default nproc), TAMMA_FAULTS_LOG_DIR
# (where a failed fault's process logs are kept, default /tmp/tamma-faults-logs).
# Needs root (network namespaces, TAP devices, loop devices, cgroups). Exit status: the suite's.
set -euo pipefail
cd "$(dirname "$0")/.."

build=build
long=1
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --short) long=0 ;;
    --build-dir) build=$2; shift ;;
    --build-dir=*) build=${1#*=} ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) args+=("$1") ;;
  esac
  shift
done

if [ "$(id -u)" != 0 ]; then
  echo "faults.sh: needs root (netns, TAP and loop devices, cgroups)" >&2
  exit 2
fi

if [ ! -f "$build/build.ninja" ] && [ ! -f "$build/Makefile" ]; then
  cmake -G Ninja -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$build" -j "${TAMMA_FAULTS_JOBS:-$(nproc)}" \
  --target tamma-worker tamma-orchestrator tamma-link-relay faults_tests

export TAMMA_FAULTS_LONG=$long
start=$(date +%s)
status=0
"$build/tests/faults_tests" "${args[@]}" | tee "$build/faults-last.log" || status=$?
echo "[faults] $( [ "$long" = 1 ] && echo long || echo short ) run: $(( $(date +%s) - start )) s," \
  "exit status $status; full output in $build/faults-last.log"
exit $status
