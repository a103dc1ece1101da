"""latentae: image autoencoders for latent diffusion (LiteVAE, DC-AE, SD-VAE).

The public surface: ``create_model`` / ``list_models`` (the registry), ``load`` (the one
loader, ``loader.py``: autoencoder folders (latentae, diffusers), diffusion model folders,
training run folders and checkpoint files, presets with ``random_init``; eval mode),
``save_pretrained`` and ``latent_scaling_factor``. The layers below are described in
``docs/architecture.md``.
"""

from latentae.diffusion.registry import create_diffusion, list_diffusion
from latentae.loader import load
from latentae.pretrained import save_pretrained
from latentae.registry import create_model, list_models
from latentae.scaling import latent_scaling_factor
from latentae.version import __version__

__all__ = ["__version__", "create_diffusion", "create_model", "latent_scaling_factor",
           "list_diffusion", "list_models", "load", "save_pretrained"]
