"""DC-AE (placeholder until the DC-AE issue lands)."""

from __future__ import annotations

from dataclasses import dataclass

from latentae.models.autoencoder import Autoencoder


@dataclass(frozen=True)
class DCAEConfig:
    latent_channels: int = 32
    scaling_factor: float = 1.0
    shift_factor: float = 0.0


class DCAE(Autoencoder):
    family = "dcae"


PRESETS: dict[str, DCAEConfig] = {}
