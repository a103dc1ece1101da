"""Activations by name, as DC-AE's configs (and diffusers ``AutoencoderDC``) spell them."""

from __future__ import annotations

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "silu": nn.SiLU, "relu6": nn.ReLU6}


def make_act(kind: str) -> nn.Module:
    """``"relu"``, ``"silu"`` or ``"relu6"`` as a module."""
    if kind not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {kind!r}")
    return ACTIVATIONS[kind]()
