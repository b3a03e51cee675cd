#!/usr/bin/env bash
# extract-vmlinux.sh BZIMAGE OUT: writes the uncompressed kernel ELF held inside a bzImage.
#
# QEMU boots an ELF vmlinux through its PVH entry point, which skips the real-mode setup and
# the in-kernel decompressor (both slow under TCG). A bzImage is setup code followed by a
# compressed payload: this finds each place where a known compression format's magic bytes
# start, decompresses from there, and keeps the first result that is an ELF file.
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 BZIMAGE OUT" >&2
  exit 2
fi
image=$1 out=$2
[ -r "$image" ] || { echo "extract-vmlinux: cannot read $image" >&2; exit 1; }

tmp=$(mktemp "${out}.XXXXXX")
trap 'rm -f "$tmp"' EXIT

is_elf() { [ "$(head -c 4 "$1" | od -An -c | tr -d ' ')" = '177ELF' ]; }

# Byte offsets (0-based) of a magic sequence, given as grep -P escapes.
offsets_of() { LC_ALL=C grep -obUaP "$1" "$image" 2>/dev/null | cut -d: -f1 || true; }

# name, magic, decompressor reading stdin (trailing bytes after the stream are ignored by
# keeping stderr quiet and judging only the output).
formats=(
  "xz|\xfd\x37\x7a\x58\x5a\x00|xz -dc --single-stream"
  "zstd|\x28\xb5\x2f\xfd|zstd -dc"
  "gzip|\x1f\x8b\x08|gzip -dc"
  "lz4|\x02\x21\x4c\x18|lz4 -dc"
  "bzip2|BZh|bzip2 -dc"
  "lzma|\x5d\x00\x00\x00|xz -dc --format=lzma"
)

for entry in "${formats[@]}"; do
  IFS='|' read -r name magic decompress <<<"$entry"
  tool=${decompress%% *}
  command -v "$tool" >/dev/null || continue
  for offset in $(offsets_of "$magic"); do
    # shellcheck disable=SC2086 # the decompressor's words are meant to split
    tail -c +"$((offset + 1))" "$image" | $decompress >"$tmp" 2>/dev/null || true
    if [ -s "$tmp" ] && is_elf "$tmp"; then
      mv "$tmp" "$out"
      trap - EXIT
      echo "extract-vmlinux: $name payload at byte $offset -> $out ($(stat -c %s "$out") bytes)"
      exit 0
    fi
  done
done

echo "extract-vmlinux: no compressed ELF kernel found in $image" \
  "(tried xz, zstd, gzip, lz4, bzip2, lzma with the tools installed)" >&2
exit 1
