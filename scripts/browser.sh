#!/usr/bin/env bash
# Make sure headless Chromium and its ChromeDriver are on this machine for the browser tests
# (tests/test_admin_preview.py): Debian's packages `chromium` and `chromium-driver`, which give
# /usr/bin/chromium and /usr/bin/chromedriver. Nothing is downloaded by the tests themselves
# (no Selenium Manager, no browser builds). Idempotent: does nothing when both are there.
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver
/usr/bin/chromium --version
/usr/bin/chromedriver --version
