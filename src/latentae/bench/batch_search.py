"""Throughput at the best batch: the papers report images/s at a saturating batch, which
a fixed small batch understates for short token sequences (small GEMMs run far below the
machine's matmul rate). ``search_batch`` doubles the batch while it fits in a memory
limit and keeps the fastest; ``best_batches`` runs it per column and mode of the
diffusion bench (``latentae bench --diffusion ... --best-batch``)."""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Callable

import torch

from latentae.bench.diffusion import infer_call, make_inputs, time_interleaved, train_call
from latentae.bench.diffusion_columns import Column, DiffusionBenchSettings
from latentae.runtime import compile_module

MAX_BATCH = 4096
SATURATED = 1.05  # stop once a doubling gains less than 5% images/s, twice in a row


def search_batch(measure: Callable[[int], tuple[float, int | None]], memory_limit: int,
                 max_batch: int = MAX_BATCH) -> dict:
    """``measure(batch) -> (seconds per call, peak memory bytes)`` for batch 1, 2, 4, …
    until the peak exceeds ``memory_limit`` (or the device runs out of memory), the
    batch reaches ``max_batch``, or throughput saturates. Returns ``{"batch",
    "images_per_s", "tried": [[batch, images/s or None, peak bytes or None], ...],
    "stopped": why}``; ``batch`` is ``None`` when not even batch 1 fits."""
    tried, best, flat, batch = [], None, 0, 1
    stopped = f"max batch {max_batch}"
    while batch <= max_batch:
        try:
            seconds, peak = measure(batch)
        except torch.OutOfMemoryError:
            tried.append([batch, None, None])
            stopped = f"out of memory at batch {batch}"
            break
        if peak is not None and peak > memory_limit:
            tried.append([batch, None, peak])
            stopped = f"batch {batch} needs {peak / 2**20:.0f} MiB > the limit"
            break
        rate = batch / seconds
        tried.append([batch, rate, peak])
        flat = flat + 1 if best is not None and rate < best[1] * SATURATED else 0
        if best is None or rate > best[1]:
            best = (batch, rate)
        if flat == 2:
            stopped = "saturated (two doublings gained < 5%)"
            break
        batch *= 2
    return {"batch": best and best[0], "images_per_s": best and best[1], "tried": tried,
            "stopped": stopped, "memory_limit_bytes": memory_limit}


def _measure(col: Column, mode: str, settings: DiffusionBenchSettings, optimizer,
             model) -> Callable[[int], tuple[float, int | None]]:
    """``measure(batch)`` for one column and mode: median seconds and peak memory."""
    def measure(batch: int) -> tuple[float, int | None]:
        s = dataclasses.replace(settings, batch=batch)
        inp = make_inputs(col, s)
        if mode.startswith("infer"):
            call = infer_call(col, model, inp, s, guided=mode == "infer_cfg")
        else:
            call = train_call(col, model, inp, optimizer, s, mode == "e2e", [])
        try:
            t = time_interleaved({"c": call}, s, progress=lambda m: None)["c"]
        finally:
            for p in col.model.parameters():
                p.grad = None
            gc.collect()
            if s.device.startswith("cuda"):
                torch.cuda.empty_cache()
        return t["median_s"], t["peak_memory_bytes"]
    return measure


def best_batches(columns: list[Column], settings: DiffusionBenchSettings, memory_limit: int,
                 progress=print, max_batch: int = MAX_BATCH) -> dict[str, dict[str, dict]]:
    """``{column label: {mode: search_batch result}}`` for each column and mode."""
    unique = {id(p): p for c in columns for p in c.model.parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(list(unique.values()), lr=1e-4, weight_decay=0.0)
    out: dict[str, dict[str, dict]] = {}
    for col in columns:
        model = compile_module(col.model, settings.compile)
        out[col.spec.label] = {}
        for mode in settings.modes:
            col.model.train(not mode.startswith("infer"))
            progress(f"bench: {col.spec.label} {mode}: searching the best batch")
            out[col.spec.label][mode] = search_batch(
                _measure(col, mode, settings, optimizer, model), memory_limit, max_batch)
    return out


def default_memory_limit(device: str) -> int:
    """90% of the GPU's memory, or half the RAM available now (bytes)."""
    if device.startswith("cuda"):
        return int(0.9 * torch.cuda.get_device_properties(torch.device(device)).total_memory)
    try:
        with open("/proc/meminfo") as f:
            kb = next(int(ln.split()[1]) for ln in f if ln.startswith("MemAvailable:"))
        return kb * 1024 // 2
    except (OSError, StopIteration):
        return 4 * 2**30


def add_best_batches(report: dict, found: dict[str, dict[str, dict]]) -> None:
    """Put each column's best batch and its images/s into its row
    (``{mode}_best_batch``, ``{mode}_best_batch_img_s``) and the searches into
    ``report["best_batch"]``."""
    report["best_batch"] = found
    for row in report["rows"]:
        for mode, res in found[row["column"]].items():
            row[f"{mode}_best_batch"] = res["batch"]
            row[f"{mode}_best_batch_img_s"] = res["images_per_s"]
