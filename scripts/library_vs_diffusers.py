"""latentae as a library user calls it against diffusers, same weights, one process.

Issue 29's table, autoencoder rows: a random-weight model is saved, then loaded the way
each library's users load it (``latentae.load(folder)``; diffusers'
``AutoencoderKL`` / ``AutoencoderDC.from_pretrained`` of the same weights exported),
and ``encode`` / ``decode`` are called on ordinary contiguous NCHW tensors. A third
column, ``as created``, is the latentae model as ``create_model`` returns it (contiguous
weights: what ``latentae.load`` handed out before the fast path; the allocator setting is
process-wide, so every column here runs with it).
The repeats are interleaved (``latentae.bench.measure.interleave``); the outputs are
compared. Ratio = diffusers seconds / latentae seconds (> 1: latentae is faster).

    python scripts/library_vs_diffusers.py --repeats 5 --threads 2 --out bench-lib.json
"""

from __future__ import annotations

import statistics
import sys
import tempfile

import torch

import latentae
from latentae.bench.measure import interleave, machine_info, time_once
from latentae.bench.peers import peer_header, peer_parser, peer_row_names, peer_rows
from latentae.bench.subjects import diffusers_twin

# (preset, mode, resolution, batch): the rows of issue 29's table
ROWS = {"sdvae-encode": ("sdvae-f8", "encode", 256, 4),
        "sdvae-decode": ("sdvae-f8", "decode", 256, 4),
        "dcae-encode": ("dcae-f32c32", "encode", 512, 1),
        "dcae-decode": ("dcae-f32c32", "decode", 512, 1)}


def _calls(preset: str, mode: str, res: int, batch: int, seed: int):
    """``{column: call}`` and the max output difference of latentae vs diffusers."""
    torch.manual_seed(seed)
    created = latentae.create_model(preset).eval().requires_grad_(False)
    for p in created.parameters():  # random weights of a plausible scale
        p.data.normal_(0, 0.02) if p.ndim > 1 else p.data.uniform_(-0.1, 0.1)
    with tempfile.TemporaryDirectory(prefix="libbench-") as tmp:
        created.save_pretrained(tmp)
        loaded = latentae.load(tmp)
    twin = diffusers_twin(created).requires_grad_(False)
    f = created.spatial_compression_ratio
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, res, res, generator=g) * 2 - 1  # (B, 3, R, R), contiguous
    z = torch.randn(batch, created.latent_channels, res // f, res // f, generator=g)

    def ours(model):
        if mode == "encode":
            return lambda: model.encode(x).mode()
        return lambda: model.decode(z)

    def theirs():
        if mode == "decode":
            return twin.decode(z).sample
        out = twin.encode(x)
        return out.latent_dist.mode() if hasattr(out, "latent_dist") else out.latent

    calls = {"latentae.load": ours(loaded), "diffusers": theirs, "as created": ours(created)}
    with torch.no_grad():
        diff = (calls["latentae.load"]() - theirs()).abs().max().item()
    return calls, diff


def measure_row(name: str, repeats: int, seed: int) -> dict:
    preset, mode, res, batch = ROWS[name]
    calls, diff = _calls(preset, mode, res, batch, seed)
    with torch.no_grad():
        for fn in calls.values():  # warm-up: one call each
            fn()
        timers = {k: ((lambda fn=fn: time_once(fn, torch.device("cpu"))), lambda: None)
                  for k, fn in calls.items()}
        times, _ = interleave(timers, repeats,
                              progress=lambda m: print(f"{name}: {m}", file=sys.stderr))
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    return {"row": name, "preset": preset, "mode": mode, "resolution": res, "batch": batch,
            "seconds": times, "max_abs_diff": diff,
            "ratio_median": med["diffusers"] / med["latentae.load"],
            "ratio_best": best["diffusers"] / best["latentae.load"],
            "fast_path_gain_median": med["as created"] / med["latentae.load"]}


def markdown(rows: list[dict], machine: dict, argv: list[str]) -> str:
    lines = [*peer_header("scripts/library_vs_diffusers.py", argv, machine),
             "| work | latentae.load s (median) | diffusers s | latentae / diffusers, median "
             "(best) | as created s | fast path gain | max abs diff |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        med = {k: statistics.median(v) for k, v in r["seconds"].items()}
        lines.append(
            f"| {r['preset']} {r['mode']} {r['resolution']}² b{r['batch']} | "
            f"{med['latentae.load']:.3f} | {med['diffusers']:.3f} | "
            f"**{r['ratio_median']:.2f}×** ({r['ratio_best']:.2f}×) | {med['as created']:.3f} | "
            f"{r['fast_path_gain_median']:.2f}× | {r['max_abs_diff']:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = peer_parser(__doc__, ROWS)
    args = p.parse_args(argv)
    names = peer_row_names(p, args, ROWS)
    argv = sys.argv[1:] if argv is None else argv
    return peer_rows(names, lambda n: measure_row(n, args.repeats, args.seed),
                     machine_info(torch.device("cpu")),
                     lambda rows, machine: markdown(rows, machine, argv), args.out)


if __name__ == "__main__":
    sys.exit(main())
