#!/usr/bin/env bash
# guest.sh RESULTS_DIR: PID 1 of a cgroup v2 test VM, on the host's files (scripts/vm/init).
#
# Makes the guest a pure cgroup v2 host (cgroup2 at /sys/fs/cgroup with nsdelegate, the
# controllers enabled for the groups below the root), then runs one GoogleTest binary as
# RESULTS_DIR/job says (written by scripts/vm/run-v2-tests.sh), with its XML report and exit
# status written to RESULTS_DIR. Ends the VM when done, whatever happened.
set -euo pipefail
results=$1
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8

say() { echo "vm guest: $*"; }
finish() {
  local rc=$?
  [ -f "$results/status" ] || echo "$rc" >"$results/status.setup-failed"
  sync
  # reboot=t on the command line: a triple fault, which -no-reboot turns into QEMU's exit.
  echo b >/proc/sysrq-trigger 2>/dev/null || true
  sleep 5
}
trap finish EXIT

read -r boot_seconds _ </proc/uptime
echo "$boot_seconds" >"$results/boot-seconds"

# shellcheck source=/dev/null # written per VM by run-v2-tests.sh
. "$results/job"

mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mkdir -p /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts /dev/pts
ln -sf pts/ptmx /dev/ptmx
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
for controller in cpu memory pids io cpuset; do
  echo "+$controller" >/sys/fs/cgroup/cgroup.subtree_control ||
    say "controller $controller could not be enabled"
done
say "cgroup2 root: controllers '$(cat /sys/fs/cgroup/cgroup.controllers)'," \
  "enabled for groups '$(cat /sys/fs/cgroup/cgroup.subtree_control)'"

if [ -d /sys/module/loop ] && [ ! -e /dev/loop-control ]; then
  mknod -m 0660 /dev/loop-control c 10 237
fi
ip link set lo up
hostname tamma-vm

cd "$results"
say "booted in ${boot_seconds}s; running $TAMMA_VM_BINARY --gtest_filter=$TAMMA_VM_FILTER" \
  "${GTEST_TOTAL_SHARDS:+(shard $((GTEST_SHARD_INDEX + 1)) of $GTEST_TOTAL_SHARDS)}" \
  "${TAMMA_VM_USER:+as uid $TAMMA_VM_USER in a delegated cgroup}"
rc=0
if [ -n "${TAMMA_VM_USER:-}" ]; then
  # A non-root worker as systemd starts a service with Delegate=yes: its own group, with the
  # directory and its cgroup.procs, cgroup.subtree_control and cgroup.threads chowned to it,
  # and the service's process started inside it. No capability is kept.
  user=$TAMMA_VM_USER
  group=/sys/fs/cgroup/tamma-deleg
  mkdir "$group"
  chown "$user:$user" "$group" "$group/cgroup.procs" "$group/cgroup.subtree_control" \
    "$group/cgroup.threads"
  # The results directory is the host's over 9p, writable by root only: the user writes
  # its report in a home of its own, copied back below.
  home=/tmp/worker-$user
  mkdir -p "$home"
  chown "$user:$user" "$home"
  chmod 0755 "$home"
  say "worker: uid $user in $group"
  # The subshell enters the group and becomes the worker: the only process in it.
  (
    echo "$BASHPID" >"$group/cgroup.procs"
    HOME=$home TMPDIR=$home EXPECT_ISOLATION_TIER=rootless exec setpriv --reuid="$user" --regid="$user" --clear-groups \
      --inh-caps=-all --bounding-set=-all "$TAMMA_VM_BINARY" "--gtest_filter=$TAMMA_VM_FILTER" \
      "--gtest_output=xml:$home/report.xml" --gtest_color=no
  ) || rc=$?
  cp "$home/report.xml" "$results/report.xml" || say "the non-root run left no report"
else
  "$TAMMA_VM_BINARY" "--gtest_filter=$TAMMA_VM_FILTER" "--gtest_output=xml:$results/report.xml" \
    --gtest_color=no || rc=$?
fi
read -r end_seconds _ </proc/uptime
echo "$end_seconds" >"$results/end-seconds"
echo "$rc" >"$results/status"
say "exit status $rc after ${end_seconds}s of uptime"
