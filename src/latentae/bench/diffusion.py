"""The diffusion-side benchmark: what an autoencoder's latent buys a DiT or U-ViT.

One column per (diffusion model, autoencoder, patch) (see
:mod:`latentae.bench.diffusion_columns`: latent shape, tokens, analytic GFLOP of one
network evaluation), then, timed in one run with the repeats *interleaved* across the
columns (A, B, C, A, B, C, ...) so that a change of machine load hits every column alike:

- ``infer``: one forward on ``B`` latents (one sampling step without guidance);
- ``infer_cfg``: one forward on ``2B`` (conditional + null labels) and the guided
  combination, i.e. one classifier-free-guided sampling step for ``B`` images;
- ``train``: ε-prediction MSE on random latents (DDPM linear betas, random t), backward
  and an AdamW step; the optimizer step is also timed on its own (``optimizer_s``);
- ``e2e`` (``on_the_fly``): the same step preceded by the frozen autoencoder encoder's
  forward (no grad) on ``B`` images: training with latents computed on the fly.
"""

from __future__ import annotations

import dataclasses
import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from latentae.bench.diffusion_columns import (
    TRAIN_STEPS,
    Column,
    DiffusionBenchSettings,
    build_columns,
    static_row,
)
from latentae.bench.measure import (
    interleave,
    machine_info,
    matmul_gflops,
    peak_memory_bytes,
    synchronize,
    time_once,
)
from latentae.runtime import autocast, compile_module

GUIDANCE_SCALE = 1.5  # the guided combination's value does not change the speed


# --- the timed calls ---------------------------------------------------------------
@dataclass
class Inputs:
    """Fixed random inputs of one column (speed does not depend on content)."""

    latents: torch.Tensor   # (B, C, N, N)
    t: torch.Tensor         # (B,) timesteps in 0…999
    labels: torch.Tensor    # (B,) classes in 0…num_classes-1
    images: torch.Tensor | None = None  # (B, 3, R, R) in [-1, 1], on_the_fly only


def make_inputs(col: Column, settings: DiffusionBenchSettings) -> Inputs:
    g = torch.Generator().manual_seed(settings.seed)
    b, n, dev = settings.batch, col.latent_size, torch.device(settings.device)
    inputs = Inputs(torch.randn(b, col.latent_channels, n, n, generator=g).to(dev),
                    torch.randint(0, TRAIN_STEPS, (b,), generator=g).to(dev),
                    torch.randint(0, max(settings.num_classes, 1), (b,), generator=g).to(dev))
    if settings.on_the_fly:
        r = settings.resolution
        images = (torch.rand(b, 3, r, r, generator=g) * 2 - 1).to(dev)
        inputs.images = images.contiguous(memory_format=torch.channels_last)
    return inputs


def infer_call(col: Column, model, inp: Inputs, settings: DiffusionBenchSettings,
               guided: bool):
    """One sampling step's network evaluation (``model``: the column's, maybe compiled)
    for ``B`` images; ``guided``: on ``2B`` (conditional, then null labels) and the
    classifier-free-guidance combination."""
    device, dtype = torch.device(settings.device), settings.torch_dtype
    c = col.latent_channels
    x, t, y = inp.latents, inp.t, inp.labels
    if guided:
        x, t = torch.cat([x, x]), torch.cat([t, t])             # (2B, C, N, N), (2B,)
        y = torch.cat([y, torch.full_like(y, settings.num_classes)])  # null class last

    def call() -> torch.Tensor:
        with torch.no_grad(), autocast(device, dtype):
            out = model(x, t, y)[:, :c]                         # ε (drop learned sigma)
            if not guided:
                return out
            cond, uncond = out.chunk(2)
            return uncond + GUIDANCE_SCALE * (cond - uncond)    # (B, C, N, N)
    return call


def train_call(col: Column, model, inp: Inputs, optimizer: torch.optim.Optimizer,
               settings: DiffusionBenchSettings, on_the_fly: bool, optimizer_s: list[float]):
    """One training step of the diffusion model (``model``: the column's, maybe
    compiled): (on the fly: the frozen encoder on the images, no grad, a posterior sample
    times the scaling factor), q(x_t | x_0), ε-MSE, backward, AdamW step. Appends the
    optimizer step's seconds to ``optimizer_s``."""
    device, dtype = torch.device(settings.device), settings.torch_dtype
    betas = torch.linspace(1e-4, 0.02, TRAIN_STEPS, dtype=torch.float64)
    alphas_cumprod = torch.cumprod(1 - betas, 0).float().to(device)  # ᾱ_t (DDPM eq. 4)
    params = [p for p in col.model.parameters() if p.requires_grad]
    c = col.latent_channels

    def call() -> None:
        for p in params:
            p.grad = None
        if on_the_fly:
            with torch.no_grad(), autocast(device, dtype):
                x0 = col.autoencoder.encode(inp.images).sample().float()
            x0 = (x0 * col.scaling_factor).contiguous()          # (B, C, N, N)
        else:
            x0 = inp.latents
        t = torch.randint(0, TRAIN_STEPS, (x0.shape[0],), device=device)
        noise = torch.randn_like(x0)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise             # q(x_t | x_0)
        with autocast(device, dtype):
            eps = model(xt, t, inp.labels)[:, :c]
        F.mse_loss(eps.float(), noise).backward()
        synchronize(device)
        t0 = time.perf_counter()
        optimizer.step()
        synchronize(device)
        optimizer_s.append(time.perf_counter() - t0)
    return call


def time_interleaved(calls: dict[str, Callable[[], object]], settings: DiffusionBenchSettings,
                     progress=print) -> dict[str, dict]:
    """Warm each call up, then ``repeats`` rounds calling each in turn (median per call),
    then one more untimed call each for its peak memory."""
    device = torch.device(settings.device)
    for fn in calls.values():
        for _ in range(settings.warmup):
            fn()
    times, peaks = interleave({key: (lambda fn=fn: time_once(fn, device),
                                     lambda fn=fn: peak_memory_bytes(fn, device))
                               for key, fn in calls.items()}, settings.repeats, progress)
    return {key: {"times_s": ts, "median_s": statistics.median(ts),
                  "peak_memory_bytes": peaks[key]} for key, ts in times.items()}


def _mode_calls(mode: str, columns: list[Column], models: list, inputs: list[Inputs],
                optimizer: torch.optim.Optimizer, settings: DiffusionBenchSettings,
                optimizer_s: dict[str, list[float]]) -> dict[str, Callable[[], object]]:
    calls = {}
    for col, model, inp in zip(columns, models, inputs):
        key = col.spec.label
        if mode.startswith("infer"):
            col.model.eval()
            calls[key] = infer_call(col, model, inp, settings, guided=mode == "infer_cfg")
        else:
            col.model.train()
            optimizer_s[key] = []
            calls[key] = train_call(col, model, inp, optimizer, settings, mode == "e2e",
                                    optimizer_s[key])
    return calls


def time_columns(columns: list[Column], settings: DiffusionBenchSettings, progress=print,
                 after_mode: Callable[[], object] = lambda: None) -> dict[str, dict[str, dict]]:
    """``{mode: {column label: timing}}`` for every mode, each mode's repeats interleaved
    across the columns; train timings carry the median ``optimizer_s``. ``after_mode``
    runs after each mode (the machine's matmul rate is sampled there). With
    ``settings.compile`` each column's model runs through ``torch.compile`` (compiled in
    the warm-up calls, which are therefore at least one)."""
    if settings.compile is not None and settings.warmup < 1:
        settings = dataclasses.replace(settings, warmup=1)
    inputs = [make_inputs(col, settings) for col in columns]
    models = [compile_module(col.model, settings.compile) for col in columns]
    unique = {id(p): p for col in columns for p in col.model.parameters() if p.requires_grad}
    # DiT's optimizer (lr 1e-4, no weight decay), PyTorch's default implementation
    optimizer = torch.optim.AdamW(list(unique.values()), lr=1e-4, weight_decay=0.0)
    out: dict[str, dict[str, dict]] = {}
    for mode in settings.modes:
        progress(f"bench: {mode} ({len(columns)} columns, repeats interleaved)")
        optimizer_s: dict[str, list[float]] = {}
        calls = _mode_calls(mode, columns, models, inputs, optimizer, settings, optimizer_s)
        out[mode] = time_interleaved(calls, settings, progress)
        for key, opt in optimizer_s.items():  # the timed rounds come after the warm-up
            timed = opt[settings.warmup:settings.warmup + settings.repeats]
            out[mode][key]["optimizer_times_s"] = timed
            out[mode][key]["optimizer_s"] = statistics.median(timed)
        del calls
        for p in unique.values():  # free the last step's gradients before the next mode
            p.grad = None
        gc.collect()
        after_mode()
    return out


def _mib(n: int | None) -> float | None:
    return None if n is None else n / 2**20


def timed_fields(row: dict, timing: dict[str, dict], batch: int) -> dict:
    """Images/s, achieved GFLOP/s (backward counted as 2× forward) and peak memory of one
    column from its timings; keys as in the JSON."""
    g, out = row["gflop"], {}
    work = {"infer": g, "infer_cfg": 2 * g, "train": 3 * g,
            "e2e": 3 * g + row.get("encoder_gflop", 0.0)}
    names = {"infer": "infer", "infer_cfg": "infer_cfg", "train": "train", "e2e": "e2e_train"}
    for mode, t in timing.items():
        img_s = batch / t["median_s"]
        out[f"{names[mode]}_img_s"] = img_s
        out[f"{names[mode]}_gflop_s"] = work[mode] * img_s
        # the least disturbed repeat: on a loaded machine noise only adds time
        out[f"{names[mode]}_best_img_s"] = batch / min(t["times_s"])
    for mode in ("infer", "infer_cfg", "e2e"):
        if mode in timing:
            out[f"{names[mode]}_peak_mem_mb"] = _mib(timing[mode]["peak_memory_bytes"])
    out["times_s"] = {mode: t["times_s"] for mode, t in timing.items()}
    if "train" not in timing:
        return out
    train = timing["train"]
    out["peak_mem_mb"] = _mib(train["peak_memory_bytes"])
    out["optimizer_s"] = train["optimizer_s"]
    out["optimizer_best_s"] = min(train["optimizer_times_s"])
    out["train_fwd_bwd_img_s"] = batch / (train["median_s"] - train["optimizer_s"])
    out["train_fwd_bwd_best_img_s"] = batch / min(
        t - o for t, o in zip(train["times_s"], train["optimizer_times_s"]))
    return out


def measure_diffusion(settings: DiffusionBenchSettings, progress=print) -> dict:
    """Measure the machine, build the columns, time them; returns ``{"settings",
    "machine", "rows"}`` (rows: one JSON-able dict per column, in the given order)."""
    settings.check()
    torch.manual_seed(settings.seed)
    columns = build_columns(settings, progress)  # bad specs fail here, before timing
    return measure_columns(columns, settings, progress)


def measure_columns(columns: list[Column], settings: DiffusionBenchSettings,
                    progress=print) -> dict:
    """:func:`measure_diffusion` on columns already built (several batch sizes or modes
    timed on the same models: ``scripts/gpu_bench.sh``)."""
    settings.check()
    device = torch.device(settings.device)
    machine = machine_info(device)
    dtypes = {"float32": torch.float32, settings.dtype: settings.torch_dtype}
    rates: dict[str, list[float]] = {name: [] for name in dtypes}

    def sample_matmul() -> None:  # the best sample is the machine's rate: load only lowers it
        for name, dtype in dtypes.items():
            rates[name].append(matmul_gflops(device, dtype, settings.matmul_size))
    sample_matmul()
    rows = [static_row(col, settings) for col in columns]
    timings = time_columns(columns, settings, progress, after_mode=sample_matmul)
    for row in rows:
        row.update(timed_fields(row, {m: timings[m][row["column"]] for m in timings},
                                settings.batch))
    for name, samples in rates.items():
        machine[f"matmul_{name}_gflops"] = max(samples)
        machine[f"matmul_{name}_samples"] = samples
    machine["load_average_1m_end"] = machine_info(device).get("load_average_1m")
    recorded = dataclasses.asdict(settings)
    recorded["autoencoders"] = [s.label for s in settings.autoencoders]
    return {"settings": recorded, "machine": machine, "rows": rows}
