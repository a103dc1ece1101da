"""Thin distributed helpers (nanoGPT / edm2 style): rank and world size from the
``torchrun`` environment, DDP wrapping, rank-0 printing, a no-sync context for
accumulation rounds. One process runs the same code path (world size 1)."""

from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as tdist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def init() -> None:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1):
    NCCL on GPU, gloo on CPU. A no-op for a single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or tdist.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    tdist.init_process_group(backend)


def rank() -> int:
    return tdist.get_rank() if tdist.is_initialized() else 0


def world_size() -> int:
    return tdist.get_world_size() if tdist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def print0(*args, **kwargs) -> None:
    if is_main():
        print(*args, **kwargs, flush=True)


def barrier() -> None:
    if tdist.is_initialized():
        tdist.barrier()


def wrap(module: nn.Module) -> nn.Module:
    """DDP-wrap ``module`` when running distributed (only its trainable parameters are
    synchronised; wrap again when the trainable set changes)."""
    if not tdist.is_initialized():
        return module
    p = next(module.parameters())
    return DistributedDataParallel(module, device_ids=[p.device.index] if p.is_cuda else None)


def no_sync(module: nn.Module, sync: bool):
    """Context that skips the gradient all-reduce unless ``sync`` (the last round)."""
    if sync or not isinstance(module, DistributedDataParallel):
        return contextlib.nullcontext()
    return module.no_sync()


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over processes (``x`` itself for one process)."""
    if tdist.is_initialized():
        x = x.clone()
        tdist.all_reduce(x)
        x /= world_size()
    return x


def any_true(flag: bool, dev: torch.device) -> bool:
    """True on every process if ``flag`` is true on any (consistent stop decisions)."""
    if not tdist.is_initialized():
        return flag
    t = torch.tensor([float(flag)], device=dev)
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return bool(t.item())


def destroy() -> None:
    if tdist.is_initialized():
        tdist.destroy_process_group()
