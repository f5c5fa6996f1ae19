#!/usr/bin/env bash
# Install Debian packages unless the files they give are already there (idempotent), with sudo
# when not root. Usage: debian_packages.sh FILE[,FILE...] PACKAGE [PACKAGE...]
#   e.g. debian_packages.sh /usr/bin/chromium,/usr/bin/chromedriver chromium chromium-driver
set -euo pipefail

IFS=, read -r -a needed <<< "$1"
shift
missing=0
for file in "${needed[@]}"; do
  [ -x "$file" ] || missing=1
done
if [ "$missing" -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "$@"
for file in "${needed[@]}"; do
  [ -x "$file" ] || { echo "$file is still missing after installing $*" >&2; exit 1; }
done
