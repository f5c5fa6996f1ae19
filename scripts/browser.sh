#!/usr/bin/env bash
# Make sure headless Chromium and its ChromeDriver are on this machine for the browser tests
# (tests/test_admin_preview.py): Debian's packages `chromium` and `chromium-driver`, which give
# /usr/bin/chromium and /usr/bin/chromedriver. Nothing is downloaded by the tests themselves
# (no Selenium Manager, no browser builds). Idempotent: does nothing when both are there.
set -euo pipefail
exec bash "$(dirname "$0")/debian_packages.sh" /usr/bin/chromium,/usr/bin/chromedriver chromium chromium-driver
