#!/usr/bin/env bash
# prepare.sh: makes the kernel and initramfs the cgroup v2 test VMs boot (scripts/vm/boot.sh),
# and prints the directory holding them (vmlinux, initramfs.cpio) on stdout.
#
# The kernel is Debian's linux-image-amd64 (a pure cgroup v2 host with cgroup_no_v1=all),
# fetched with apt-get download and unpacked, never installed. The initramfs is static
# busybox, scripts/vm/init as /init, and the modules the VM needs, in dependency order.
# Everything is cached under TAMMA_VM_CACHE (default build-vm-cache/ in the repository),
# keyed on the kernel package's version and, for the initramfs, on init and the module list.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${TAMMA_VM_CACHE:-$repo/build-vm-cache}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

log() { echo "vm/prepare: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for tool in apt-get apt-cache dpkg-deb depmod modprobe cpio busybox; do
  command -v "$tool" >/dev/null || die "$tool is missing (scripts/setup.sh installs it)"
done
busybox=$(command -v busybox)
# ldd fails on a static binary: the initramfs has no libraries.
! ldd "$busybox" >/dev/null 2>&1 || die "$busybox is not static (install busybox-static)"

# linux-image-amd64 is a metapackage: the real one is its dependency.
package=$(apt-cache depends --important linux-image-amd64 2>/dev/null |
  awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -n "$package" ]; then
  version=$(apt-cache policy "$package" | awk '/Candidate:/ {print $2}')
fi
if [ -z "${package:-}" ] || [ -z "${version:-}" ] || [ "$version" = "(none)" ]; then
  # No package lists (apt-get update never ran): use the newest kernel already cached.
  newest=$(find "$cache" -mindepth 1 -maxdepth 1 -type d -name 'linux-image-*' | sort -V | tail -1)
  [ -f "${newest:-/nonexistent}/vmlinux" ] ||
    die "apt knows no linux-image-amd64 (run apt-get update) and nothing is cached in $cache"
  log "apt knows no linux-image-amd64; using the cached $(basename "$newest")"
  kdir=$newest
else
  kdir=$cache/${package}_${version}
fi

# The package file is kept (70 MB): the initramfs is rebuilt from it when init changes.
if [ ! -f "$kdir/vmlinux" ] || [ ! -f "$kdir/kernel.deb" ]; then
  log "fetching $package $version"
  rm -rf "$kdir.partial"
  mkdir -p "$kdir.partial/root"
  (cd "$kdir.partial" && apt-get download -q -o APT::Sandbox::User=root "$package=$version" >&2)
  deb=$(find "$kdir.partial" -maxdepth 1 -name '*.deb' | head -1)
  [ -n "$deb" ] || die "apt-get download left no .deb"
  mv "$deb" "$kdir.partial/kernel.deb"
  dpkg-deb --fsys-tarfile "$kdir.partial/kernel.deb" |
    tar -x -C "$kdir.partial/root" --wildcards './boot/vmlinuz-*' './boot/config-*'
  "$here/extract-vmlinux.sh" "$kdir.partial"/root/boot/vmlinuz-* "$kdir.partial/vmlinux" >&2
  chmod 0644 "$kdir.partial/vmlinux"
  cp "$kdir.partial"/root/boot/config-* "$kdir.partial/config"
  rm -rf "$kdir.partial/root" "$kdir"
  mv "$kdir.partial" "$kdir"
  # Older kernels' caches are of no more use.
  find "$cache" -mindepth 1 -maxdepth 1 -name 'linux-image-*' ! -path "$kdir" -exec rm -rf {} +
fi

# What the guest loads, with what they need, in dependency order (builtin ones are left out by
# modprobe): the virtio-mmio transport and console, 9p over virtio for the host's files,
# overlay for a writable root, loop and ext4 (with crc32c, which ext4 asks for by name) for
# the disk-limit tests.
wanted=(virtio_mmio virtio_console 9pnet_virtio 9p overlay loop ext4 crc32c_generic)
key=$( (cat "$here/init"; printf '%s\n' "${wanted[@]}"; sha256sum <"$busybox") |
  sha256sum | cut -c1-16)
initramfs=$kdir/initramfs-$key.cpio
if [ ! -f "$initramfs" ]; then
  staging=$(mktemp -d "$kdir/initramfs.XXXXXX")
  trap 'rm -rf "$staging"' EXIT
  dpkg-deb -x "$kdir/kernel.deb" "$staging/deb"
  kver=$(basename "$(find "$staging/deb/lib/modules" -mindepth 1 -maxdepth 1 -type d | head -1)")
  [ -n "$kver" ] || die "no modules in $kdir/kernel.deb"
  depmod -b "$staging/deb" "$kver"
  modules=()
  for name in "${wanted[@]}"; do
    while read -r verb path _; do
      [ "$verb" = insmod ] || continue
      case " ${modules[*]} " in *" $path "*) ;; *) modules+=("$path") ;; esac
    done < <(modprobe -d "$staging/deb" -S "$kver" --show-depends "$name")
  done
  [ ${#modules[@]} -gt 0 ] || die "no modules resolved"
  log "building initramfs (${#modules[@]} modules: $(printf '%s ' "${modules[@]##*/}"))"
  root=$staging/root
  mkdir -p "$root"/{bin,dev,proc,sys,mnt,modules}
  cp "$busybox" "$root/bin/busybox"
  ln -s busybox "$root/bin/sh"
  install -m 0755 "$here/init" "$root/init"
  i=0
  for path in "${modules[@]}"; do
    i=$((i + 1))
    cp "$path" "$root/modules/$(printf '%02d' "$i")-$(basename "$path")"
  done
  (cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet) >"$initramfs.tmp"
  mv "$initramfs.tmp" "$initramfs"
  find "$kdir" -maxdepth 1 -name 'initramfs-*.cpio' ! -path "$initramfs" -delete
  rm -rf "$staging"
  trap - EXIT
fi
ln -sfn "$(basename "$initramfs")" "$kdir/initramfs.cpio"
echo "$kdir"
