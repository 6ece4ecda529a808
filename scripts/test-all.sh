#!/usr/bin/env bash
# The README's test command: installs whatever the test suite needs that is missing (Debian
# packages, npm dependencies), then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use: one list per concern in scripts/debs/*.txt (one package per line,
# '#' comments), so that each suite declares its own.
mapfile -t DEBS < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' scripts/debs/*.txt | grep -v '^$' | sort -u)
missing=()
for p in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi
# etcd-server's package starts a system etcd on :2379; the tests run their own on private ports.
systemctl stop etcd 2>/dev/null || true

npm ci --no-audit --no-fund
npm test
