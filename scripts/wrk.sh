#!/usr/bin/env bash
# Make sure wrk, the HTTP load generator bench/accept.py drives, is on this machine: Debian's
# package `wrk`. Idempotent: does nothing when it is there.
set -euo pipefail

if command -v wrk >/dev/null 2>&1; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends wrk
wrk --version || true
