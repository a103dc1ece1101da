"""latentae: image autoencoders for latent diffusion (LiteVAE, DC-AE, SD-VAE)."""

__version__ = "0.1.0"

from latentae.checkpoint import load, save_pretrained  # noqa: E402
from latentae.diffusion.registry import create_diffusion, list_diffusion  # noqa: E402,F401
from latentae.registry import create_model, list_models  # noqa: E402
from latentae.scaling import latent_scaling_factor  # noqa: E402

__all__ = ["__version__", "create_model", "latent_scaling_factor", "list_models", "load",
           "save_pretrained"]
