#!/usr/bin/env bash
# Regenerate docs/web-demo.png: the web demo classifying real photos with the trained CIFAR-10
# fixture (tests/fixtures/restv2_cifar10.safetensors, docs/fixture.md), in headless Chromium.
#
#   apps/scripts/web-screenshot.sh [CHECKPOINT [PNG]]
#
# 1. export the checkpoint (default: the fixture) to ONNX with `restv2-edge export`;
# 2. copy it for the page with apps/scripts/copy-export.py (hashes checked);
# 3. pick one photo per CIFAR-10 class from the shared ImageNet sample
#    (apps/scripts/cifar10-photos.py, table apps/scripts/cifar10-imagenet.tsv) and make golden
#    vectors of them (`restv2-edge golden`: the artifact's own onnxruntime answers);
# 4. serve the page and drive headless Chromium through every photo (apps/web/tests/e2e.mjs,
#    which checks the page's answers against the golden vectors), screenshot after the last one;
# 5. score the checkpoint on every photo of the sample that maps to a CIFAR-10 class.
#
# PNG defaults to docs/web-demo.png. A CHECKPOINT with other classes (e.g. official ImageNet weights) works for steps 1-4; step 5
# then only means something for a CIFAR-10 model. Needs restv2-edge[onnx], node,
# `npm ci --prefix apps/web`, chromium and the shared data (RESTV2_EDGE_DATA).
# The photos are linked from the shared data into a temporary folder, never into the repository.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
checkpoint=${1:-$repo/tests/fixtures/restv2_cifar10.safetensors}
png=$(realpath -m "${2:-$repo/docs/web-demo.png}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
photos=(python3 "$repo/apps/scripts/cifar10-photos.py")

restv2-edge export --target onnx --weights "$checkpoint" --output "$work/export"
python3 "$repo/apps/scripts/copy-export.py" web "$work/export" --dest "$work/web-model"
"${photos[@]}" pick "$work/photos"
count=$(find "$work/photos" -mindepth 1 -maxdepth 1 | wc -l)
restv2-edge golden "$work/web-model" --output "$work/golden" --data "$work/photos" --images "$count"
node "$repo/apps/web/tests/e2e.mjs" --golden "$work/golden" --model "$work/web-model" \
  --screenshot "$work/page.png" --report "$work/report.json"
cp "$work/page.png" "$png"  # only once every check of the page passed
echo "wrote $png"

mapfile -t mapped < <("${photos[@]}" list)
restv2-edge predict "$work/export" "${mapped[@]}" --top 1 --json > "$work/predictions.json"
"${photos[@]}" score "$work/predictions.json"
