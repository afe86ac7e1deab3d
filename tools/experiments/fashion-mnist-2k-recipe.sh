#!/usr/bin/env bash
# The Fashion-MNIST study at the reference script's recipe (issue 16, docs/results-fashion-mnist-recipe.md):
# ResNet-18 (CIFAR layout) width 16, 20 epochs, batch 32, SGD 0.1 with Nesterov 0.9, clipping 1.0 then weight
# decay 5e-4, ×0.1 at 50/75/90%, the two-view base loss 0.5·[CE(x) + CE(crop+flip(x))], Fashion-MNIST
# normalisation inside the model. Protocol as the reference script: every one of the N training images trains
# (no hold-out), and the final epoch's weights are tested on the full 10,000 test images.
# Each run is its own job with a checkpoint per epoch: rerunning this script continues where it stopped.
# Jobs run seed-major (seed 0 of every stack first), so a study cut short still compares.
#
#   bash tools/experiments/fashion-mnist-2k-recipe.sh [OUT] [WORKERS]   (needs Debian's dataset-fashion-mnist)
#   node tools/experiments/report-recipe.mjs [OUT] [--write docs/results-fashion-mnist-recipe.md]   (the tables)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-runs/fashion-mnist-recipe}
WORKERS=${2:-1}
CLI=packages/cli/dist/cli.js
[ -f "$CLI" ] || npm run build
COMMON=(--data fashion-mnist --model resnet18 --model-options width=16 --epochs 20 --batch-size 32
        --lr 0.1 --augment two-view --validation none --workers "$WORKERS" --resume)
LS='label-smoothing:epsilon=0.1'
RCAD1='rcad:alpha=1,lambda=0.2'
RCAD05='rcad:alpha=0.5,lambda=0.2'

STACKS=(--stack erm --stack "$LS" --stack "$RCAD1" --stack "$RCAD1+$LS" --stack "$RCAD05+$LS")
# 1. The comparison at 2,000 training images: five stacks, seeds 0-2 first.
node "$CLI" compare "${COMMON[@]}" --train-size 2000 --seeds 0,1,2 --out "$OUT/n2000" "${STACKS[@]}"
# 2. Data scarcity: label smoothing with and without RCAD (α 1.0) at 1,000 and 5,000 images (2,000 is above).
for N in 1000 5000; do
  node "$CLI" compare "${COMMON[@]}" --train-size "$N" --seeds 0,1 --out "$OUT/n$N" --stack "$LS" --stack "$RCAD1+$LS"
done
# 3. Seeds 3 and 4 of the comparison (the finished seeds 0-2 are read back, not retrained).
node "$CLI" compare "${COMMON[@]}" --train-size 2000 --seeds 0,1,2,3,4 --out "$OUT/n2000" "${STACKS[@]}"
