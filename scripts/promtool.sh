#!/usr/bin/env bash
# Make sure Prometheus' promtool is on this machine for the alert-rule tests
# (tests/test_alerts.py: `promtool check rules` and `promtool test rules` on ops/prometheus/):
# Debian's package `prometheus`, which gives /usr/bin/promtool. Only the tool is used; the
# package's service is not started by the tests. Idempotent: does nothing when it is there.
set -euo pipefail
exec bash "$(dirname "$0")/debian_packages.sh" /usr/bin/promtool prometheus
