#!/usr/bin/env bash
# Fill .gpu/ (git-ignored), the folder the GPU machine's `run` carries (issue 27): the
# BSDS400 and kodak24 images the studies read (from ../shared/data or
# $LATENTAE_STUDY_DATA) and the LPIPS-Alex weights with their manifest (from the weights
# cache, $LATENTAE_WEIGHTS or ~/.cache/latentae). No wheels: the studies' path imports
# nothing the machine lacks (tests/test_studies.py checks it). Prints the total size and
# refuses over 60 MiB (the whole working tree that travels must stay under 64 MiB).
#
#   bash scripts/gpu_prepare.sh [DEST]        # DEST default: .gpu in the repository root
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=${LATENTAE_STUDY_DATA:-$ROOT/../shared/data}
WEIGHTS=${LATENTAE_WEIGHTS:-$HOME/.cache/latentae}
DEST=${1:-$ROOT/.gpu}
LIMIT_MIB=60
for need in "$DATA/bsds400-train" "$DATA/kodak24" "$WEIGHTS/lpips-alex.safetensors" \
            "$WEIGHTS/manifest.json"; do
    [[ -e $need ]] || { echo "gpu_prepare: $need is missing" >&2; exit 1; }
done
TMP="$DEST.partial"
rm -rf "$TMP"
mkdir -p "$TMP/data" "$TMP/weights"
cp -rL "$DATA/bsds400-train" "$DATA/kodak24" "$TMP/data/"
cp -L "$WEIGHTS/lpips-alex.safetensors" "$WEIGHTS/manifest.json" "$TMP/weights/"
BYTES=$(du -sb "$TMP" | cut -f1)
MIB=$(( (BYTES + 1048575) / 1048576 ))
if (( MIB > LIMIT_MIB )); then
    rm -rf "$TMP"
    echo "gpu_prepare: $MIB MiB > $LIMIT_MIB MiB: refused (nothing written)" >&2
    exit 1
fi
rm -rf "$DEST"
mv "$TMP" "$DEST"
echo "gpu_prepare: $DEST holds $BYTES bytes ($MIB MiB of at most $LIMIT_MIB):"
du -sh "$DEST"/data/* "$DEST"/weights
