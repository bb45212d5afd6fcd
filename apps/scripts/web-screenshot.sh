#!/usr/bin/env bash
# Regenerate docs/web-demo.png: export ResTv2-T to ONNX, make golden vectors, and run the web
# end-to-end test in headless Chromium, which screenshots the page after the first photo.
#
#   apps/scripts/web-screenshot.sh [CHECKPOINT]
#
# Without CHECKPOINT the export has random weights (the top-5 is then meaningless, the layout and
# the latency are not). Needs restv2-edge[onnx], node, `npm ci --prefix apps/web` and chromium.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
weights=()
if [ $# -ge 1 ]; then weights=(--weights "$1"); fi
restv2-edge export --target onnx "${weights[@]}" --output "$work/export"
restv2-edge golden "$work/export" --output "$work/golden" --images 4
node "$repo/apps/web/tests/e2e.mjs" --golden "$work/golden" --model "$work/export" \
  --screenshot "$repo/docs/web-demo.png" --report "$work/report.json"
echo "wrote $repo/docs/web-demo.png"
