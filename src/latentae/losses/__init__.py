"""Training losses: reconstruction (L1, L2, Charbonnier, wavelet, high-pass), KL,
perceptual (LPIPS-VGG), GAN losses and weights, and discriminators."""

from latentae.losses.discriminators import (
    DISCRIMINATORS,
    PatchGANDiscriminator,
    StyleGANDiscriminator,
    UNetDiscriminator,
    build_discriminator,
)
from latentae.losses.gan import (
    adaptive_weight,
    discriminator_loss,
    generator_loss,
    r1_penalty,
)
from latentae.losses.reconstruction import (
    charbonnier_loss,
    gaussian_blur,
    highpass_l1_loss,
    kl_loss,
    l1_loss,
    l2_loss,
    wavelet_charbonnier_loss,
)

__all__ = [
    "DISCRIMINATORS", "PatchGANDiscriminator", "StyleGANDiscriminator", "UNetDiscriminator",
    "adaptive_weight", "build_discriminator", "charbonnier_loss", "discriminator_loss",
    "gaussian_blur", "generator_loss", "highpass_l1_loss", "kl_loss", "l1_loss", "l2_loss",
    "r1_penalty", "wavelet_charbonnier_loss",
]
