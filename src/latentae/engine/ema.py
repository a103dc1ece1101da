"""Exponential moving average of the generator weights; the EMA model is what gets
validated and exported (``save_pretrained``)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps ``self.model``, a frozen copy of the model whose floating-point parameters
    follow ``p_ema ← d·p_ema + (1-d)·p`` after every optimizer step; buffers are copied.

    ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates (the common warm-up), so
    short runs are not dominated by the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.num_updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        self.num_updates += 1
        ema, live = list(self.model.parameters()), [p.detach() for p in model.parameters()]
        if len(ema) != len(live):
            raise ValueError(f"EMA holds {len(ema)} parameters, the model {len(live)}")
        # one multi-tensor kernel instead of a Python loop of lerp_ calls: the same values,
        # 2-4x faster for small models (latentae bench --train-step, docs/benchmarks.md)
        torch._foreach_lerp_(ema, live, 1.0 - d)
        for b_ema, b in zip(self.model.buffers(), model.buffers(), strict=True):
            b_ema.copy_(b)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "num_updates": self.num_updates,
                "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.num_updates = int(state["num_updates"])
