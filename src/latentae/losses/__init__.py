"""Training losses: reconstruction (L1, L2, Charbonnier, wavelet, high-pass), KL,
perceptual (LPIPS-VGG), GAN losses and weights, discriminators, and the CutMix
regularisation of the U-Net discriminator."""

from latentae.losses.cutmix import cutmix, cutmix_consistency_loss, cutmix_loss, cutmix_mask
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
    fake_term,
    generator_loss,
    r1_penalty,
    real_term,
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
    "adaptive_weight", "build_discriminator", "charbonnier_loss", "cutmix",
    "cutmix_consistency_loss", "cutmix_loss", "cutmix_mask", "discriminator_loss",
    "fake_term", "gaussian_blur", "generator_loss", "highpass_l1_loss", "kl_loss", "l1_loss",
    "l2_loss", "r1_penalty", "real_term", "wavelet_charbonnier_loss",
]
