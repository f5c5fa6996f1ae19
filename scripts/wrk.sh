#!/usr/bin/env bash
# Make sure wrk, the HTTP load generator bench/accept.py drives, is on this machine: Debian's
# package `wrk`, which gives /usr/bin/wrk. Idempotent: does nothing when it is there.
set -euo pipefail
exec bash "$(dirname "$0")/debian_packages.sh" /usr/bin/wrk wrk
