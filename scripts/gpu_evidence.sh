#!/usr/bin/env bash
# The GPU evidence (issue 27) for the GPU machine as it is (python3 with its own torch,
# PYTHONPATH=src, nothing installed): run from the repository root with the carried .gpu/
# (scripts/gpu_prepare.sh). Everything is in scripts/gpu_evidence.py (its docstring: the
# sections, the time budget, the files written to $OUT).
#
#   bash scripts/gpu_evidence.sh [--budget SECONDS] [--jobs N]   # results in $OUT
#   bash scripts/gpu_evidence.sh --smallest                      # dry-run sizes, any CPU
#   PYTHON=/work/main/.venv/bin/python bash scripts/gpu_evidence.sh --rehearse
#
# --rehearse: the smallest run in a fresh clone of HEAD with only .gpu/, then the machine's
# limits checked (files back, sizes, depth, the travelling tree).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [[ " $* " == *" --rehearse "* ]]; then
    exec "$PY" scripts/gpu_evidence.py "$@"
fi
OUT=${OUT:-runs/gpu_evidence}
mkdir -p "$OUT"
export OUT
"$PY" scripts/gpu_evidence.py --out "$OUT" "$@" 2>&1 | tee "$OUT/log.txt"
