"""Diffusion models on latentae's latents: DiT and U-ViT backbones (one import statement
per module, so other parts add theirs without touching these)."""

from latentae.diffusion.base import DiffusionModel, count_params  # noqa: F401
from latentae.diffusion.convert import load_official  # noqa: F401
from latentae.diffusion.dit import DiT, DiTConfig  # noqa: F401
from latentae.diffusion.registry import (  # noqa: F401
    create_diffusion,
    describe_presets,
    flops,
    list_diffusion,
    load,
)
from latentae.diffusion.uvit import UViT, UViTConfig  # noqa: F401
