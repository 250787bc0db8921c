#!/usr/bin/env bash
# Render a cifarlab report in headless Chromium and save a screenshot to look at.
#   scripts/check_report_renders.sh REPORT.html [SCREENSHOT.png]
# Needs chromium (Debian/Ubuntu: apt-get install -y chromium). Exits non-zero if Chromium fails or the
# screenshot is missing/empty; prints how many figures/tables the page holds and that none is external.
set -euo pipefail
html="${1:?usage: $0 REPORT.html [SCREENSHOT.png]}"
shot="${2:-${html%.html}.png}"
browser="$(command -v chromium || command -v chromium-browser || true)"
[ -n "$browser" ] || { echo "chromium not found (apt-get install -y chromium)" >&2; exit 2; }
# No network, no GPU, no sandbox (containers): the page must render from the file alone.
"$browser" --headless --no-sandbox --disable-gpu --disable-background-networking \
  --window-size=1280,4000 --screenshot="$shot" "file://$(realpath "$html")" >/dev/null 2>&1
[ -s "$shot" ] || { echo "no screenshot written" >&2; exit 1; }
external=$(grep -oE '(src|href)="[^"]*"' "$html" | grep -vE '="(data:|#)' || true)
[ -z "$external" ] || { echo "external references found:" >&2; echo "$external" >&2; exit 1; }
echo "rendered $html -> $shot ($(stat -c %s "$shot") bytes);" \
  "figures: $(grep -o '<figure>' "$html" | wc -l), tables: $(grep -o "<table " "$html" | wc -l)"
