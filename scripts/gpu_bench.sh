#!/usr/bin/env bash
# The GPU tables of docs/benchmarks.md (issue 7), for a machine with one CUDA GPU.
# Run from the repository root after `make test` has built .venv; about 10 minutes on an
# H100. Writes JSON + Markdown per table into $OUT (default bench-gpu/).
set -euo pipefail
OUT=${OUT:-bench-gpu}
mkdir -p "$OUT"
bench() { .venv/bin/latentae bench "$@" --device cuda --warmup 3 --repeats 10; }

# LiteVAE table 3: encoders at 256², batch 32 (paper: B 1.9×, S 5.6× the SD-VAE encoder;
# B's peak memory ≤ 0.36× SD-VAE's), float32 and bf16 autocast.
bench sdvae-f8 litevae-b litevae-s --compare diffusers --baseline diffusers:sdvae-f8 \
    --resolution 256 --batch-size 32 --modes encode,train_encode --dtype float32,bfloat16 \
    --json "$OUT/encoders.json" --markdown "$OUT/encoders.md"
# SD-VAE decoder (= LiteVAE decoder): latentae vs diffusers, float32 and bf16.
bench sdvae-f8 --compare diffusers --baseline diffusers:sdvae-f8 --resolution 256 --batch-size 8 \
    --modes decode,train_decode --dtype float32,bfloat16 \
    --json "$OUT/decoder.json" --markdown "$OUT/decoder.md"
# DC-AE f32c32 vs diffusers AutoencoderDC at 512².
bench dcae-f32c32 --compare diffusers --baseline diffusers:dcae-f32c32 --resolution 512 \
    --batch-size 8 --modes encode,decode --dtype float32,bfloat16 \
    --json "$OUT/dcae.json" --markdown "$OUT/dcae.md"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.txt"
