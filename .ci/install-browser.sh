#!/usr/bin/env bash
# Headless Chromium for the playground's browser test (tests/test_playground_browser.py): Debian's
# `chromium` package, driven by playwright's Python package with executable_path=/usr/bin/chromium.
# Playwright never downloads a browser of its own here (`playwright install` is never run).
# Idempotent: does nothing when Chromium is already installed and starts.
set -euo pipefail

CHROMIUM=${CLIPSERVE_CHROMIUM:-/usr/bin/chromium}
if [ -x "$CHROMIUM" ] && "$CHROMIUM" --headless --no-sandbox --version >/dev/null 2>&1; then
  echo "install-browser: $("$CHROMIUM" --version 2>/dev/null) is installed"
  exit 0
fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
# fonts-dejavu-core: text in the screenshots is legible even on a bare image.
$sudo apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
"$CHROMIUM" --version 2>/dev/null
