"""Measurement primitives: wall time (warm-up + median), peak memory, FLOPs, machine.

Honest by construction: every timed call is synchronized on GPU; CPU peak memory is the
growth of the process's peak resident set (``VmHWM``, reset through
``/proc/self/clear_refs``) over the resident set before the call, after the allocator
has returned freed memory (``malloc_trim``); GPU peak memory is
``torch.cuda.max_memory_allocated`` growth. FLOPs come from
``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts as 2 FLOPs).
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from latentae.nn.wavelets import dwt2
from latentae.runtime import glibc


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one synchronized call of ``fn`` takes."""
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def time_calls(fn: Callable[[], object], device: torch.device, warmup: int = 1,
               repeats: int = 3) -> list[float]:
    """``warmup`` untimed calls, then the seconds of each of ``repeats`` timed calls."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    return [time_once(fn, device) for _ in range(repeats)]


def interleave(timers: dict[str, tuple[Callable[[], float], Callable[[], int | None]]],
               repeats: int, progress=None) -> tuple[dict[str, list[float]], dict]:
    """The one timing loop of both bench kinds. ``timers``: per column, ``(time, peak)``
    callables (seconds of one call, peak memory of one call), already warmed up. The
    repeats are interleaved (A, B, C, A, B, C, ...) so that a change of machine load hits
    every column alike; then one more, untimed call each for its peak memory (its
    bookkeeping returns cached memory to the OS, which would slow a timed call).
    Returns ``({column: seconds per repeat}, {column: peak bytes})``."""
    gc.collect()  # cyclic garbage would distort the RSS baselines
    times: dict[str, list[float]] = {name: [] for name in timers}
    for r in range(repeats):
        if progress is not None:
            progress(f"bench:   round {r + 1}/{repeats}")
        for name, (timed, _) in timers.items():
            times[name].append(timed())
    return times, {name: peak() for name, (_, peak) in timers.items()}


def median(values: list[float]) -> float:
    return float(statistics.median(values))


# --- memory --------------------------------------------------------------------------
def _proc_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_free_memory() -> None:
    """Return freed heap memory to the OS so the RSS baseline is honest (call
    ``gc.collect()`` beforehand where cyclic garbage may hold tensors; it is slow with
    large libraries loaded, so it is not done here)."""
    lib = glibc()
    if lib is not None and hasattr(lib, "malloc_trim"):
        lib.malloc_trim(0)


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def peak_memory_bytes(fn: Callable[[], object], device: torch.device) -> int | None:
    """Peak memory growth while ``fn`` runs: CUDA max allocated, or CPU peak RSS growth.

    Returns ``None`` where the platform cannot measure it (no ``/proc`` peak reset).
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    _release_free_memory()
    ok = _reset_peak_rss()
    base = _proc_status_kb("VmRSS")
    fn()
    peak = _proc_status_kb("VmHWM")
    if not ok or base is None or peak is None:
        return None
    return max(0, peak - base) * 1024


# --- FLOPs and machine rates -------------------------------------------------------
def count_flops(fn: Callable[[], object]) -> int:
    """Total FLOPs of the ops ``fn`` runs (FlopCounterMode: convs, matmuls, SDPA)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn()
    return int(counter.get_total_flops())


def matmul_gflops(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 1536,
                  repeats: int = 5) -> float:
    """This machine's ``n×n`` matmul rate in GFLOP/s (median of ``repeats``)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = time_calls(lambda: torch.mm(a, b), device, warmup=2, repeats=repeats)
    return 2 * n**3 / median(times) / 1e9


def copy_vs_haar(device: torch.device, batch: int = 4, resolution: int = 256,
                 repeats: int = 7) -> dict[str, float]:
    """Throughput (GB/s of input) of one Haar DWT level against a plain copy
    (``torch.clone``) of the same tensor, for contiguous and channels_last input (the
    latter is what a channels_last LiteVAE feeds it)."""
    out: dict[str, float] = {}
    x = torch.randn(batch, 3, resolution, resolution, device=device)
    nbytes = x.numel() * x.element_size()
    for tag, t in (("", x), ("_cl", x.contiguous(memory_format=torch.channels_last))):
        t_copy = median(time_calls(lambda t=t: t.clone(), device, warmup=3, repeats=repeats))
        t_haar = median(time_calls(lambda t=t: dwt2(t), device, warmup=3, repeats=repeats))
        out[f"copy{tag}_GBps"] = nbytes / t_copy / 1e9
        out[f"haar_dwt{tag}_GBps"] = nbytes / t_haar / 1e9
        out[f"haar_over_copy{tag}"] = t_copy / t_haar
    return out


def cpu_bf16_instructions() -> list[str]:
    """The CPU's bf16 instruction sets (``avx512_bf16``, ``amx_bf16`` from
    ``/proc/cpuinfo``): without them bf16 autocast on the CPU is emulated, and slower
    than float32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")),
                         [])
    except OSError:
        return []
    return [name for name in ("avx512_bf16", "amx_bf16") if name in flags]


def machine_info(device: torch.device) -> dict[str, object]:
    """What the numbers depend on: CPU/GPU model, torch version, threads, load."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                       cpu)
    except OSError:
        pass
    info: dict[str, object] = {
        "cpu": cpu, "cpu_count": os.cpu_count(), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "device": str(device),
        "cpu_bf16": cpu_bf16_instructions(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if hasattr(os, "getloadavg"):
        info["load_average_1m"] = round(os.getloadavg()[0], 2)
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
