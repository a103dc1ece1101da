"""Training recipes as data: a recipe is a discriminator choice and a list of
:class:`Phase` records, each saying what trains, at which resolution, with which
optimizer and which losses (DESIGN.md, "Training"). The autoencoder task
(``autoencoder.py``) runs them in order through the generic loop (``loop.py``). A phase
is ``steps`` optimizer steps; one step consumes ``batch_size`` images per process times
the number of processes (the loop counts images). Values are checked in ``config.py``.

Where a paper states a value it is cited; values it leaves open are marked "our choice".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from latentae.errors import InputError


@dataclass(frozen=True)
class LossWeights:
    """Weights of the generator loss terms (0 disables a term)."""

    l1: float = 1.0  # pixel L1: LDM, LiteVAE, DC-AE
    l2: float = 0.0
    perceptual: float = 1.0  # LPIPS-VGG; LDM perceptual_weight 1.0
    kl: float = 1e-6  # LDM kl_weight 1e-6 (see losses.reconstruction for the scaling)
    wavelet: float = 0.0  # Charbonnier on high Haar bands (LiteVAE §4)
    highpass: float = 0.0  # Gaussian high-pass L1 (LiteVAE §4)
    highpass_sigma: float = 1.0  # our choice: the paper does not state σ
    adversarial: float = 0.0  # constant λ_adv, or a multiplier of the adaptive weight
    adaptive: bool = False  # Esser et al. adaptive weight (LiteVAE eq. 2)
    r1: float = 0.0  # R1 γ (the penalty enters the D loss as γ/2·R1)


@dataclass(frozen=True)
class Phase:
    """One stage of training. ``train_groups`` name the model's ``param_groups()``
    (``all``, ``encoder``, ``decoder``, ``decoder.head``, and for DC-AE
    ``encoder.project_out``, ``decoder.project_in``); every other parameter is frozen.
    The discriminator trains and the adversarial term enters from step ``disc_start``
    of the phase when ``discriminator_on``."""

    name: str
    steps: int
    resolution: int
    batch_size: int
    lr: float
    optimizer: str = "adam"
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    train_groups: tuple[str, ...] = ("all",)
    losses: LossWeights = field(default_factory=LossWeights)
    discriminator_on: bool = False
    disc_start: int = 0
    gan_loss: str = "hinge"


@dataclass(frozen=True)
class Recipe:
    """A named list of phases and the discriminator they share."""

    name: str
    phases: tuple[Phase, ...]
    discriminator: str = "unet"
    discriminator_channels: int = 64

    @property
    def uses_discriminator(self) -> bool:
        return any(p.discriminator_on for p in self.phases)


def litevae() -> Recipe:
    """LiteVAE (§4, App. F): Adam lr 1e-4, betas (0.5, 0.9), batch 16, UNet
    discriminator with a constant adversarial weight, wavelet + high-pass losses, 100k
    steps at 128² then 50k at 256² (progressive resolution, Table 5)."""
    # Our choices (not stated by the paper): λ_adv 0.1, wavelet and high-pass weights 0.1,
    # discriminator from step 50k (LDM's disc_start).
    losses = LossWeights(wavelet=0.1, highpass=0.1, adversarial=0.1)
    common = dict(batch_size=16, lr=1e-4, betas=(0.5, 0.9), losses=losses,
                  discriminator_on=True)
    return Recipe("litevae", (Phase("p128", 100_000, 128, disc_start=50_000, **common),
                              Phase("p256", 50_000, 256, **common)), discriminator="unet")


def dcae() -> Recipe:
    """DC-AE decoupled high-resolution adaptation (§3.3, Fig. 6): (1) low-res full
    training, L1 + LPIPS, AdamW lr 6.4e-5 wd 0.1; (2) high-res latent adaptation, only
    the encoder head and decoder input train, lr 1.6e-5 wd 1e-3; (3) low-res local
    refinement, only the decoder head, PatchGAN, lr 5.4e-5 betas (0.5, 0.9). Plain
    autoencoder: no KL."""
    # Our choices: step counts, batch 16, 256²/512² resolutions, λ_adv 0.1 in phase 3.
    rec = LossWeights(kl=0.0)
    return Recipe("dcae", (
        Phase("lowres", 100_000, 256, 16, 6.4e-5, "adamw", weight_decay=0.1, losses=rec),
        Phase("highres-adapt", 20_000, 512, 16, 1.6e-5, "adamw", weight_decay=1e-3,
              train_groups=("encoder.project_out", "decoder.project_in"), losses=rec),
        Phase("refine", 20_000, 256, 16, 5.4e-5, "adamw", betas=(0.5, 0.9),
              train_groups=("decoder.head",), discriminator_on=True,
              losses=dataclasses.replace(rec, adversarial=0.1)),
    ), discriminator="patchgan")


def sdvae() -> Recipe:
    """The LDM autoencoder recipe (Rombach et al., ``autoencoder_kl_*`` configs,
    taming ``LPIPSWithDiscriminator``): L1 + LPIPS, KL 1e-6, PatchGAN with hinge loss
    from step 50,001, adaptive weight, Adam betas (0.5, 0.9)."""
    # LDM's lr is 4.5e-6 × batch × GPUs; 7.2e-5 is that at batch 16. Steps: our choice.
    losses = LossWeights(adversarial=1.0, adaptive=True)
    return Recipe("sdvae", (Phase("main", 200_000, 256, 16, 7.2e-5, betas=(0.5, 0.9),
                                  losses=losses, discriminator_on=True,
                                  disc_start=50_001),), discriminator="patchgan")


RECIPES = {"litevae": litevae, "dcae": dcae, "sdvae": sdvae}


def get_recipe(name: str) -> Recipe:
    """A recipe by name (``litevae``, ``dcae``, ``sdvae``)."""
    if name not in RECIPES:
        raise InputError(f"unknown recipe {name!r}; valid: {sorted(RECIPES)}")
    return RECIPES[name]()


def scale_steps(recipe: Recipe, factor: float) -> Recipe:
    """Shrink (or grow) every phase's ``steps`` and ``disc_start`` by ``factor``
    (at least 1 step per phase), e.g. ``--steps-scale 0.01`` for small runs."""
    if factor <= 0:
        raise InputError(f"steps scale must be positive, got {factor}")
    phases = tuple(dataclasses.replace(p, steps=max(1, round(p.steps * factor)),
                                       disc_start=round(p.disc_start * factor))
                   for p in recipe.phases)
    return dataclasses.replace(recipe, phases=phases)
