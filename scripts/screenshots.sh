#!/usr/bin/env bash
# Regenerates docs/screenshots/*.png: runs the console's browser test (Chromium through
# chromedriver, against a fresh platform with the demo data), which saves a screenshot of
# each main page when CONSOLE_SCREENSHOTS names a folder.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromedriver >/dev/null; then
    echo "chromedriver is missing: apt-get install chromium chromium-driver" >&2
    exit 1
fi
out="$PWD/docs/screenshots"
mkdir -p "$out"
CONSOLE_BROWSER_REQUIRED=1 CONSOLE_SCREENSHOTS="$out" \
    cargo test -p console --test browser -- --nocapture
ls -l "$out"
