#!/usr/bin/env bash
# The GPU evidence (issue 17): the LiteVAE-vs-SD-VAE and DC-AE shortcut studies at
# --scale gpu (128², bf16 autocast, batch 32, 3 paired seeds, budgets 400/800 steps (the script's override),
# held-out test on 2,048 native-scale crops with KID), sized for <= 9 minutes on one
# H100/H200-class GPU. Results (results.json, table.md, curves.png per study) go to
# OUT (default $OUT, else runs/gpu_evidence).
#
#   scripts/gpu_evidence.sh [--dry-run] [OUT]
#
# --dry-run: build every run of the gpu scale and train one step on the CPU (two
# seeds, two crops per set): checks that the script runs; measures nothing.
set -euo pipefail
DRY=()
if [[ "${1:-}" == "--dry-run" ]]; then DRY=(--dry-run); shift; fi
DEST="${1:-${OUT:-runs/gpu_evidence}}"
PY="${PYTHON:-python}"
mkdir -p "$DEST"
START=$(date +%s)
# Arms kept to the decisive contrasts so both studies fit the 9 minutes:
# LiteVAE-tiny vs the equally small and the full SD encoder; shortcuts on/off at f32, f64.
# Two runs at a time share the GPU (the tiny models leave it mostly idle).
"$PY" -m latentae.studies.litevae_vs_sdvae --scale gpu "${DRY[@]}" --resume \
    --arms lite-tiny,sd-enc-small,sd-enc --budgets 400,800 --eval-every 200 \
    --lr-mult 4 --jobs 3 --out "$DEST/litevae_vs_sdvae" 2>&1 | tail -n 40
"$PY" -m latentae.studies.dcae_shortcuts --scale gpu "${DRY[@]}" --resume \
    --arms dcae-f32,dcae-f32-noshortcut,dcae-f64,dcae-f64-noshortcut \
    --budgets 400,800 --eval-every 200 --lr-mult 8 --jobs 4 \
    --out "$DEST/dcae_shortcuts" 2>&1 | tail -n 40
echo "gpu_evidence: $(( $(date +%s) - START )) s wall; results in $DEST"
