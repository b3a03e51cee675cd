#!/usr/bin/env bash
# boot.sh KERNEL_DIR RESULTS_DIR: boots one pure cgroup v2 test VM and waits for it to end.
#
# KERNEL_DIR is what scripts/vm/prepare.sh printed (vmlinux, initramfs.cpio). RESULTS_DIR must
# hold a `job` file (scripts/vm/run-v2-tests.sh writes it); it is shared read-write with the
# guest at the same path, and gets the guest's output (output.log), the kernel's console
# (console.log), the test report and `status`. The host's / is shared read-only; the guest
# writes to a tmpfs overlay on top of it (scripts/vm/init).
#
# Exit status: the guest's (the test binary's), 124 if TAMMA_VM_TIMEOUT passed, 125 if the
# guest ended without a status (a panic, a soft lockup, a failed setup).
#
# Settings: TAMMA_VM_ACCEL (kvm or tcg; default kvm when the CPU has vmx/svm and /dev/kvm
# opens), TAMMA_VM_CPUS (default 2), TAMMA_VM_MEMORY (MiB, default 3072), TAMMA_VM_TIMEOUT
# (seconds, default 600).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

if [ $# -ne 2 ]; then
  echo "usage: $0 KERNEL_DIR RESULTS_DIR" >&2
  exit 2
fi
kernel_dir=$1
results=$(cd "$2" && pwd)
[ -f "$results/job" ] || { echo "vm/boot: $results/job is missing" >&2; exit 2; }

accel=${TAMMA_VM_ACCEL:-}
if [ -z "$accel" ]; then
  accel=tcg
  if grep -qw 'vmx\|svm' /proc/cpuinfo && [ -r /dev/kvm ] && [ -w /dev/kvm ]; then accel=kvm; fi
fi
cpus=${TAMMA_VM_CPUS:-2}
memory=${TAMMA_VM_MEMORY:-3072}
timeout=${TAMMA_VM_TIMEOUT:-600}

case $accel in
  kvm) accel_args=(-accel kvm -cpu host) ;;
  tcg) accel_args=(-accel "tcg,thread=multi" -cpu max) ;;
  *) echo "vm/boot: TAMMA_VM_ACCEL must be kvm or tcg, not '$accel'" >&2; exit 2 ;;
esac

# Under TCG on a busy host the guest's own TSC calibration can fail and hang the boot: tell
# it the host's frequency (the guest's TSC runs at the host's rate) and the delay loop's
# calibration (HZ=250 on Debian), and trust the TSC.
khz=$(awk -F': *' '/^cpu MHz/ {printf "%d", $2 * 1000; exit}' /proc/cpuinfo)
clock=()
if [ -n "$khz" ] && [ "$khz" -gt 0 ]; then
  clock=("tsc_early_khz=$khz" clocksource=tsc tsc=reliable no_timer_check "lpj=$((khz * 4))")
fi

cmdline=(
  console=ttyS0 quiet loglevel=4
  # A pure cgroup v2 host: no v1 hierarchy can be mounted.
  cgroup_no_v1=all
  "${clock[@]}"
  # A hung or crashed guest ends at once (reboot=t: a triple fault; QEMU has -no-reboot)
  # instead of eating the timeout.
  softlockup_panic=1 panic=-1 reboot=t
  pci=off mitigations=off random.trust_cpu=on
  -- "$results" "$here/guest.sh"
)

rm -f "$results"/{status,status.setup-failed,boot-seconds,end-seconds,output.log,console.log}
start=$(date +%s.%N)
rc=0
timeout --kill-after=10 "$timeout" qemu-system-x86_64 \
  -M microvm -nodefaults -no-user-config -display none -no-reboot \
  "${accel_args[@]}" -smp "$cpus" -m "$memory" \
  -kernel "$kernel_dir/vmlinux" -initrd "$kernel_dir/initramfs.cpio" \
  -append "${cmdline[*]}" \
  -serial "file:$results/console.log" \
  -device virtio-serial-device \
  -chardev "file,id=out,path=$results/output.log" -device virtconsole,chardev=out \
  -fsdev local,id=hostroot,path=/,security_model=passthrough,readonly=on,multidevs=remap \
  -device virtio-9p-device,fsdev=hostroot,mount_tag=hostroot \
  -fsdev "local,id=results,path=$results,security_model=passthrough,multidevs=remap" \
  -device virtio-9p-device,fsdev=results,mount_tag=results \
  </dev/null >"$results/qemu.log" 2>&1 || rc=$?
end=$(date +%s.%N)
awk -v s="$start" -v e="$end" 'BEGIN {printf "%.1f\n", e - s}' >"$results/wall-seconds"

if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
  echo "vm/boot: $(basename "$results"): no end after ${timeout}s (TAMMA_VM_TIMEOUT): killed" >&2
  exit 124
fi
if [ ! -f "$results/status" ]; then
  echo "vm/boot: $(basename "$results"): the guest ended without a status (QEMU exit $rc)" >&2
  exit 125
fi
exit "$(cat "$results/status")"
