"""Peak resident memory of one large encode (or decode), untiled and tiled, each in a
fresh process (``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``): the figures of
``docs/robustness.md`` (issue 14, item 14: ``--tile`` must bound memory by default).

    PYTHONPATH=src python scripts/tile_memory.py [--model litevae-tiny] [--size 3000x2000]
        [--src OTHER/src]   # measure another checkout (e.g. before the fix)

Random-init weights and a random image: memory does not depend on the values.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, time, torch
from latentae import create_model
from latentae.runtime import ModelRunner
spec = json.loads(sys.argv[1])
torch.manual_seed(0)
torch.set_num_threads(spec["threads"])
model = create_model(spec["model"])
runner = ModelRunner(model, "cpu", tile=spec["tile"], overlap=64, max_batch=spec["max_batch"])
w, h = spec["size"]
t = time.perf_counter()
if spec["what"] == "encode":
    z = runner.encode(torch.rand(1, 3, h, w) * 2 - 1)
else:
    f = model.spatial_compression_ratio
    z = runner.decode(torch.randn(1, model.latent_channels, h // f, w // f))
print(json.dumps({"shape": list(z.shape), "seconds": time.perf_counter() - t}))
"""

SETTINGS = [("untiled", None, None), ("--tile 512", 512, None),
            ("--tile 512 --max-batch 4", 512, 4), ("--tile 512 --max-batch 35", 512, 35)]


def measure(src: Path, model: str, size: tuple[int, int], what: str, tile: int | None,
            max_batch: int | None, threads: int) -> dict:
    """Run one encode/decode in a fresh process; its peak RSS in MB and its seconds."""
    spec = {"model": model, "size": size, "what": what, "tile": tile,
            "max_batch": max_batch, "threads": threads}
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": str(threads)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    p = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], env=env,
                       capture_output=True, text=True, check=True)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KB, max over children
    if peak <= before:
        raise RuntimeError("measure each setting in a fresh parent (the peak is a maximum "
                           "over all children); run the script once per setting with --only")
    return {**json.loads(p.stdout), "peak_mb": peak / 1024}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="litevae-tiny")
    p.add_argument("--size", default="3000x2000", help="WxH")
    p.add_argument("--what", choices=["encode", "decode"], default="encode")
    p.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1] / "src")
    p.add_argument("--only", type=int, help="index into the settings (one per parent)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    picks = [SETTINGS[args.only]] if args.only is not None else SETTINGS
    if len(picks) > 1:  # ru_maxrss of children is a maximum: one parent per setting
        for i in range(len(SETTINGS)):
            subprocess.run([sys.executable, __file__, *sys.argv[1:], "--only", str(i)],
                           check=True)
        return 0
    label, tile, max_batch = picks[0]
    r = measure(args.src, args.model, size, args.what, tile, max_batch, args.threads)
    print(f"{args.what} {args.model} {args.size} {label:<26} peak RSS {r['peak_mb']:7.0f} MB"
          f"  {r['seconds']:6.1f} s  -> {tuple(r['shape'])}  ({args.src})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
