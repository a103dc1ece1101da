"""The one interface every latentae autoencoder implements.

Images are ``(B, 3, H, W)`` floats in [-1, 1]. ``encode(x)`` returns a posterior
(``sample``, ``mode``, ``kl``); ``decode(z)`` returns an image; ``forward(x)`` returns
``(reconstruction, posterior)``. Attributes use the diffusers vocabulary:
``latent_channels``, ``spatial_compression_ratio``, ``scaling_factor``, ``shift_factor``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from latentae.serialization import write_model_dir


class Autoencoder(nn.Module):
    """Base class: subclasses set ``family`` and implement ``_encode`` and ``_decode``.

    ``config`` is the family's frozen config dataclass; the model is a pure function of it
    (``latentae.load`` rebuilds a model from ``config.json`` alone).
    """

    family: ClassVar[str] = ""
    kind: ClassVar[str] = "autoencoder"  # what latentae.cards writes the card of
    # CPU inference in channels_last: faster for convolution-heavy families
    # (docs/benchmarks.md); runtime.fast_path and ModelRunner's default follow it.
    channels_last_inference: ClassVar[bool] = True

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        self.preset: str | None = None  # set by the registry; saved in config.json

    # --- the interface ------------------------------------------------------------
    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    @property
    def spatial_compression_ratio(self) -> int:
        raise NotImplementedError

    @property
    def in_channels(self) -> int:
        return 3

    @property
    def scaling_factor(self) -> float:
        return self.config.scaling_factor

    @property
    def shift_factor(self) -> float:
        return self.config.shift_factor

    def encode(self, x: torch.Tensor):
        """Images ``(B, 3, H, W)`` in [-1, 1] -> posterior over ``(B, nz, H/f, W/f)``."""
        self.check_image(x)
        return self._encode(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents ``(B, nz, h, w)`` -> images ``(B, 3, h·f, w·f)`` in about [-1, 1]."""
        if z.ndim != 4 or z.shape[1] != self.latent_channels:
            raise ValueError(f"decode expects latents (B, {self.latent_channels}, h, w), "
                             f"got shape {tuple(z.shape)}")
        return self._decode(z)

    def forward(self, x: torch.Tensor, sample: bool = True,
                generator: torch.Generator | None = None):
        """``x -> (reconstruction, posterior)``; ``sample=False`` decodes the mode."""
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample else posterior.mode()
        return self.decode(z), posterior

    def save_pretrained(self, path: str, card: dict[str, Any] | None = None) -> None:
        """Write ``config.json`` + ``model.safetensors`` + the model card ``README.md``
        (``latentae.serialization``, ``latentae.cards``; ``card``: fields to keep besides
        the model's own, e.g. a training run's)."""
        write_model_dir(self, path, card=card)

    def parameter_counts(self) -> dict[str, int]:
        """``{"encoder", "decoder", "total"}``: see :func:`latentae.registry.parameter_counts`."""
        groups = self.param_groups()
        return {"encoder": sum(p.numel() for p in groups["encoder"]),
                "decoder": sum(p.numel() for p in groups["decoder"]),
                "total": sum(p.numel() for p in self.parameters())}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Named parameter groups a training phase can select. Every family has
        ``all``, ``encoder``, ``decoder``; families add finer ones."""
        return {"all": list(self.parameters()),
                "encoder": list(self.encoder.parameters()),
                "decoder": list(self.decoder.parameters())}

    def last_layer(self) -> nn.Parameter:
        """The weight of the decoder's final layer, the one whose output is the image
        (or, for a wavelet-output decoder, the bands the inverse DWT turns into it).

        The adaptive GAN weight (Esser et al., LiteVAE eq. 2) is a ratio of gradient norms
        at this parameter (timm's ``get_classifier`` idea: callers ask the model, not its
        module tree). Default: the last ``weight`` of two or more dimensions (a conv or
        linear kernel) registered under ``self.decoder``; families override it where
        registration order could differ from the order of application.
        """
        last = None
        for module in self.decoder.modules():
            weight = module._parameters.get("weight")
            if weight is not None and weight.ndim >= 2:
                last = weight
        if last is None:
            raise NotImplementedError(f"{type(self).__name__}.decoder has no conv or linear "
                                      "layer: override last_layer()")
        return last

    # --- checks -------------------------------------------------------------------
    def check_image(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` naming the fix for a wrong rank, channel count or size."""
        if x.ndim != 4:
            raise ValueError(f"expected images (B, 3, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} channels (RGB), got {x.shape[1]}: "
                             "convert grayscale/RGBA images to RGB first")
        f = self.spatial_compression_ratio
        h, w = x.shape[-2:]
        if h % f or w % f:
            raise ValueError(
                f"image size {h}x{w} is not divisible by the compression ratio {f} of "
                f"{self.preset or self.family}: pad it to a multiple of {f} (the CLI's --pad "
                "reflect-pads and crops back) or crop it")

    def _encode(self, x: torch.Tensor):
        raise NotImplementedError

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
