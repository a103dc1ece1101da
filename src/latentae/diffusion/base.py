"""What every latentae diffusion backbone shares: the call ``model(x, t, labels)`` with
its input checks, the token count, and ``save_pretrained`` (``config.json`` +
``model.safetensors`` + the model card ``README.md``, the layout of the autoencoders,
``serialization.write_model_dir``; ``latentae.diffusion.load`` reads it back)."""

from __future__ import annotations

import os
from typing import Any, ClassVar

import torch
from torch import nn

from latentae.errors import InputError
from latentae.serialization import write_model_dir


def count_params(model: nn.Module) -> int:
    """All parameters, trainable or not: DiT's fixed sin-cos position embedding is a
    frozen ``nn.Parameter`` and counts, as in the DiT release's printed totals."""
    return sum(p.numel() for p in model.parameters())


def check_config(input_size: int, patch_size: int, in_channels: int, num_classes: int) -> None:
    """Refuse a config whose latent grid the patch does not tile, with the fix."""
    if patch_size < 1 or in_channels < 1 or num_classes < 0:
        raise InputError(f"patch_size ({patch_size}) and in_channels ({in_channels}) must be "
                         f">= 1 and num_classes ({num_classes}) >= 0")
    if input_size < patch_size or input_size % patch_size:
        raise InputError(f"latent size {input_size} is not divisible by patch size "
                         f"{patch_size}: choose a patch that divides the latent "
                         "(image size / autoencoder factor)")


class DiffusionModel(nn.Module):
    """Base class: subclasses set ``family`` and build from ``config`` (a frozen dataclass
    with ``input_size``, ``patch_size``, ``in_channels``, ``num_classes``, ``learn_sigma``).

    ``model(x, t, labels)``: ``x`` ``(B, C, N, N)`` latents, ``t`` ``(B,)`` (or a scalar)
    timesteps in the DiT convention 0…999 (floats allowed), ``labels`` ``(B,)`` class
    indices or ``None`` for unconditional (the null class ``num_classes``). Returns
    ``(B, 2C, N, N)`` with learned sigma (ε then the variance values), else ``(B, C, N, N)``.
    """

    family: ClassVar[str] = ""
    kind: ClassVar[str] = "diffusion"  # what latentae.cards writes the card of

    def __init__(self, config: Any) -> None:
        super().__init__()
        check_config(config.input_size, config.patch_size, config.in_channels,
                     config.num_classes)
        self.config = config
        self.preset: str | None = None  # set by the registry; saved in config.json

    @property
    def in_channels(self) -> int:
        return self.config.in_channels

    @property
    def out_channels(self) -> int:
        return 2 * self.config.in_channels if self.config.learn_sigma else self.config.in_channels

    @property
    def tokens(self) -> int:
        """Patch tokens per sample, ``(input_size / patch_size)²``."""
        return (self.config.input_size // self.config.patch_size) ** 2

    def prepare_inputs(self, x: torch.Tensor, t: torch.Tensor | float,
                       labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Check ``x``; return ``t`` as ``(B,)`` and ``labels`` as ``(B,)`` long on x's
        device (``None`` -> all null class)."""
        c = self.config
        n = c.input_size
        if x.ndim != 4 or x.shape[1] != c.in_channels:
            raise InputError(f"{self.family} expects latents (B, {c.in_channels}, {n}, {n}); got "
                             f"{tuple(x.shape)}: in_channels must equal the autoencoder's "
                             "latent channels")
        h, w = x.shape[-2:]
        if h % c.patch_size or w % c.patch_size:
            raise InputError(f"latent {h}x{w} is not divisible by the patch size {c.patch_size}")
        if (h, w) != (n, n):
            raise InputError(f"latent {h}x{w} does not match the model's input_size {n} (its "
                             f"position embedding holds {self.tokens} tokens): build the "
                             f"model with input_size={h}")
        b = x.shape[0]
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(b) if t.ndim == 0 else t
        if t.shape != (b,):
            raise InputError(f"timesteps must be a scalar or shape ({b},); got {tuple(t.shape)}")
        if labels is None:
            if c.num_classes and not getattr(c, "null_class", True):
                raise InputError(f"this {self.family} has no null class (its label table has "
                                 f"{c.num_classes} rows: trained without label dropout), so "
                                 "it cannot run unconditionally: pass labels, guidance 1")
            return t, torch.full((b,), c.num_classes, dtype=torch.long, device=x.device)
        labels = torch.as_tensor(labels, device=x.device)
        if labels.shape != (b,) or labels.is_floating_point() or labels.is_complex():
            raise InputError(f"labels must be integer class indices of shape ({b},) in "
                             f"0…{c.num_classes} ({c.num_classes} = null class) or None; got "
                             f"{labels.dtype} {tuple(labels.shape)}")
        return t, labels.long()

    def parameter_counts(self) -> dict[str, int]:
        """``{"total": count_params(self)}`` (the model card's ``parameters``)."""
        return {"total": count_params(self)}

    def save_pretrained(self, path: str | os.PathLike,
                        state_dict: dict[str, torch.Tensor] | None = None,
                        card: dict[str, Any] | None = None) -> None:
        """Write ``config.json``, ``model.safetensors`` (this model's weights, or
        ``state_dict``, e.g. EMA) and the model card ``README.md`` (``latentae.cards``;
        ``card``: fields to keep besides the model's own, e.g. a training run's) into the
        folder ``path`` (created if missing; each file atomic), as the autoencoders do."""
        write_model_dir(self, path, state_dict, card)
