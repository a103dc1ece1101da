#!/usr/bin/env bash
# The papers' GPU speed tables (issue 29 item 5) in a time budget, for the machine that
# runs scripts/gpu_evidence.sh: LiteVAE table 3 (encoders at batch 32, 256², float32 and
# bf16), DC-AE table 3 (UViT-H f8p2 vs f64p1, DiT-XL f8p2 vs f32p1 at 512², inference and
# training, bf16, eager), DC-AE's phase-2 memory, then DC-AE table 3 through torch.compile.
#
#   scripts/gpu_bench.sh BUDGET_SECONDS [--rehearse]
#
# Writes $OUT/gpu_bench.json and $OUT/gpu_bench.md (OUT default: bench-gpu), rewritten
# after every table, so a run stopped at the budget keeps every finished table. Stops
# within BUDGET_SECONDS: the driver starts no table it cannot finish in time (its own
# estimate) and `timeout` ends it at the budget in any case. Needs only python3 with
# torch (no diffusers, nothing installed); --rehearse: tiny models on the CPU (~1 min).
set -uo pipefail
BUDGET=${1:?usage: scripts/gpu_bench.sh BUDGET_SECONDS [--rehearse]}
shift
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT=${OUT:-bench-gpu}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
if (( BUDGET < 20 )); then
    echo "gpu_bench: a budget of ${BUDGET} s is too short for any table; skipped"
    exit 0
fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# The driver plans for BUDGET - 15 s (interpreter start, the last write); timeout is the
# backstop at BUDGET - 2 s.
timeout -k 2 $(( BUDGET - 2 )) "$PY" -m latentae.bench.paper_tables \
    --budget $(( BUDGET - 15 )) --out "$OUT" "$@" 2>&1
rc=$?
if (( rc == 124 || rc == 137 )); then
    echo "gpu_bench: stopped at the ${BUDGET} s budget; $OUT holds every finished table"
elif (( rc != 0 )); then
    echo "gpu_bench: exit status $rc; $OUT holds every finished table"
fi
exit 0
