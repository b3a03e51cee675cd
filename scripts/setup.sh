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
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
