#!/usr/bin/env bash
# ops/install-deps.sh — installs what Tern needs to build, run and test on Debian 12.
# Idempotent: asks dpkg first and runs apt-get (update + install) only when a package is
# missing. Needs root for the install step (as on a fresh CI machine).
set -euo pipefail

PACKAGES=(
  # build
  build-essential cmake pkg-config
  libraft-dev libuv1-dev librocksdb-dev libprotobuf-c-dev protobuf-c-compiler
  libssl-dev libcrypt-dev
  # tests: unit (cmocka), sanitizers and fuzzing (clang + its runtime), integration
  libcmocka-dev clang libclang-rt-14-dev python3 python3-pytest openssl swaks
  # the cluster front
  haproxy
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
