#!/usr/bin/env bash
# Installs everything tamma-worker needs to build and test on Debian 12.
# Only Debian packages, only apt-get: CI runs this on a fresh machine.
set -euo pipefail

packages=(
  build-essential g++ clang cmake ninja-build pkg-config git make
  # libFuzzer and the sanitizers' runtime for clang (fuzz/, scripts/fuzz.sh).
  libclang-rt-14-dev
  libcurl4-openssl-dev nlohmann-json3-dev libspdlog-dev libfmt-dev libcli11-dev
  libsqlite3-dev libpq-dev libboost-dev libseccomp-dev libcap-dev libssl-dev e2fsprogs
  libgtest-dev libgmock-dev libbenchmark-dev libpugixml-dev
  flawfinder python3-pytest
  iproute2 util-linux procps psmisc
  # Certificates for the TLS tests.
  openssl
  # The PostgreSQL store's tests start throwaway clusters of their own (initdb, postgres).
  postgresql
  # The examples and the CI tests: a C project, its scan, and python3's XML parser.
  gcc flawfinder python3
  # tests/e2e/nginx_test.cc runs the real nginx in front of orchestrator replicas, with the
  # configuration users copy (docs/nginx/), as a child of the test on a free loopback port.
  nginx
  # scripts/vm/: the sandbox, CLI and daemon tests again in a pure cgroup v2 VM (Debian's kernel,
  # fetched by apt-get download; xz unpacks it), with a busybox initramfs (docs/testing.md).
  qemu-system-x86 busybox-static cpio kmod xz-utils
  # The Debian package (cpack DEB), its checks (lintian, systemd-analyze verify) and install
  # test (dpkg), and the deployment manifests' test (python3-yaml): tests/packaging/.
  dpkg-dev lintian systemd adduser python3-yaml
  # bench/worker_run_bench's anchor, measured in the same run (not used by the product).
  bubblewrap
  # tests/egress: real clients in the sandbox (curl, git, pip) through the egress proxy to
  # python3's HTTP(S) servers in a network namespace the test makes (iproute2, openssl above).
  curl python3-pip
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  # Packages whose postinst starts a service (nginx would serve port 80, postgresql a cluster)
  # must not leave one running: the tests start their own servers. A policy-rc.d that answers
  # 101 ("action forbidden") makes invoke-rc.d start nothing during the install; it is removed
  # afterwards, whatever happens, only if this script made it.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# made by tamma scripts/setup.sh for one apt-get install\nexit 101\n' |
      "${sudo_cmd[@]}" tee "$policy" >/dev/null
    "${sudo_cmd[@]}" chmod 755 "$policy"
    trap '"${sudo_cmd[@]}" rm -f "$policy"' EXIT
  fi
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
