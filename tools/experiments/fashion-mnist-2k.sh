#!/usr/bin/env bash
# The data-scarce Fashion-MNIST study of docs/results-fashion-mnist-2k.md: 2,000 training images
# (a seeded subset; 10% of it held out for validation), the full 10,000 test images, a ResNet-18
# (CIFAR layout) of width 8, the paper's recipe scaled to 2 cores: 15 epochs, batch 64, SGD 0.1 with
# Nesterov momentum, ×0.1 at 50/75/90% of the run, clipping 1.0 then weight decay 5e-4, crop + flip.
# Each run is a separate job under OUT/*/runs/<id>/ with its own checkpoint; rerunning this script
# continues where it stopped (--resume) and each finished run is appended to results.jsonl.
# Order: seed 0 of every stack of a group first, then the other seeds, so a study cut short still compares.
#
#   bash tools/experiments/fashion-mnist-2k.sh [OUT]      (needs Debian's dataset-fashion-mnist)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-runs/fashion-mnist-2k}
COMMON=(--data fashion-mnist --train-size 2000 --model resnet18 --model-options width=8
        --epochs 15 --batch-size 64 --lr 0.1 --augment crop-flip --workers 2 --resume)
CLI=packages/cli/dist/cli.js
[ -f "$CLI" ] || npm run build
THREE=(--stack erm --stack label-smoothing:epsilon=0.1 --stack rcad:alpha=0.5 --stack 'rcad:alpha=0.5+label-smoothing:epsilon=0.1')
ONE=(--stack rcad:alpha=1 --stack mixup:mixupAlpha=0.4 --stack adversarial-training:attack=fgsm,epsilon=0.03
     --stack entropy-min --stack 'rcad:alpha=0.5+mixup:mixupAlpha=0.4')

# Required with three seeds: ERM, label smoothing, RCAD, RCAD + label smoothing; seed 0 of all four first.
node "$CLI" compare "${COMMON[@]}" --seeds 0,1,2 --out "$OUT/three-seeds" "${THREE[@]}"
# With one seed: RCAD at α = 1.0, mixup, FGSM adversarial training, entropy minimisation, RCAD + mixup.
node "$CLI" compare "${COMMON[@]}" --seeds 0 --out "$OUT/one-seed" "${ONE[@]}"
