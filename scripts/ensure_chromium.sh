#!/usr/bin/env bash
# Installs Debian's Chromium for the browser test when it is missing (needs root).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
else
  echo "Chromium is missing and this is not root: install it with 'apt-get install -y chromium';" >&2
  echo "the browser test will be skipped." >&2
fi
