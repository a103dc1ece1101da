"""Training recipes as data: a recipe is a discriminator choice and a list of
:class:`Phase` records, each saying what trains, at which resolution, with which
optimizer and which losses (docs/training.md). The autoencoder task
(``autoencoder.py``) runs them in order through the generic loop (``loop.py``). A phase
is ``steps`` optimizer steps; one step consumes ``batch_size`` images, the global batch
over all processes (each takes ``batch_size / processes``; the loop counts images).
Values are checked in ``config.py``.

Where a paper (or the LDM config a paper follows) states a value it is cited; every
value that is our choice is marked ``# ours:`` with the reason, and listed in
docs/training.md ("Values that are ours"). Run-level settings that are ours too live in
``TrainConfig``: gradient clipping (``grad_clip`` 1.0; neither paper clips) and the EMA
of the generator weights (``ema_decay`` 0.999; neither paper states one).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from latentae.errors import InputError


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms (0 disables a term); defaults are LDM's where it has one."""

    l1: float = 1.0  # pixel L1: LDM, LiteVAE, DC-AE
    l2: float = 0.0
    perceptual: float = 1.0  # LPIPS-VGG; LDM perceptual_weight 1.0
    kl: float = 1e-6  # LDM kl_weight 1e-6 (see losses.reconstruction for the scaling)
    wavelet: float = 0.0  # Charbonnier on the level-1 high Haar bands / 2 (LiteVAE App. G)
    highpass: float = 0.0  # Gaussian high-pass L1 (LiteVAE §4.3)
    highpass_sigma: float = 1.0  # ours: the paper does not state σ
    adversarial: float = 0.0  # constant λ_adv, or LDM's disc_weight times the adaptive ratio
    adaptive: bool = False  # Esser et al. adaptive weight (LiteVAE eq. 2)
    r1: float = 0.0  # R1 γ (the penalty enters the D loss as γ/2·R1)
    # CutMix regularisation of a U-Net discriminator (Schönfeld et al. §3.2): weight of
    # losses.cutmix_loss in the D loss; 0 (off) in every recipe: LiteVAE does not say.
    cutmix: float = 0.0
    # Diffusability regularisers (losses/regularisers.py, each cited there); 0: off.
    equivariance: float = 0.0  # EQ-VAE (Kouzelis et al. 2025): decode a transformed latent
    equivariance_p: float = 0.5  # paper: EQ-VAE's p_prior, the share of steps that apply it
    latent_scale_equivariance: float = 0.0  # Skorokhodov et al. 2025, bilinear x2/x4
    decoder_noise: float = 0.0  # decode z + sigma*std(z)*eps, sigma ~ U(0, sigma_max)
    decoder_noise_sigma: float = 0.2  # ours: sigma_max, in units of the latent's std


@dataclass(frozen=True)
class Phase:
    """One stage of training. ``train_groups`` name the model's ``param_groups()``
    (``all``, ``encoder``, ``decoder``, ``decoder.head``, and for DC-AE
    ``encoder.project_out``, ``decoder.project_in``, ``encoder.head.K``,
    ``decoder.input.K``, ``decoder.head.K`` for K = 1, 2, 3); every other parameter is
    frozen. When ``discriminator_on``, the discriminator trains from step ``disc_start``
    of the phase and the adversarial term enters ``disc_warmup`` steps later. The
    learning rate warms up linearly over ``warmup_steps`` and then stays at ``lr``
    (``lr_decay="constant"``, every paper recipe) or falls to 0 at the phase's last step
    (``"cosine"``, ``"linear"``; :func:`phase_lr`)."""

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
    # Steps from disc_start in which only the discriminator trains (the generator's
    # adversarial term is still off), so a fresh D does not push a trained decoder around.
    disc_warmup: int = 0
    gan_loss: str = "hinge"  # LDM's disc_loss; LiteVAE App. D.1: hinge ≈ logistic
    warmup_steps: int = 0
    lr_decay: str = "constant"  # "constant", "cosine" or "linear"


# Phase fields added after runs were first written, with the value those runs used: a
# config.yaml without them resumes when this run has that value (``rundir.write_config``).
ADDED_PHASE_FIELDS: dict[str, object] = {
    "warmup_steps": 0, "lr_decay": "constant", "equivariance": 0.0, "equivariance_p": 0.5,
    "latent_scale_equivariance": 0.0, "decoder_noise": 0.0, "decoder_noise_sigma": 0.2}


def phase_lr(phase: Phase, step: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based) of ``phase``: ``phase.lr``
    times the warm-up ``min(1, (step + 1) / warmup_steps)`` and the decay at
    ``t = step / steps``: 1, ``(1 + cos(πt)) / 2`` or ``1 - t``."""
    warm = min(1.0, (step + 1) / phase.warmup_steps) if phase.warmup_steps else 1.0
    t = min(1.0, step / phase.steps)
    decay = {"constant": 1.0, "cosine": 0.5 * (1 + math.cos(math.pi * t)),
             "linear": 1.0 - t}[phase.lr_decay]
    return phase.lr * warm * decay


@dataclass(frozen=True)
class Recipe:
    """A named list of phases and the discriminator they share."""

    name: str
    phases: tuple[Phase, ...]
    discriminator: str = "unet"
    discriminator_channels: int = 64  # PatchGAN ndf 64 (LDM); ours: the UNet D's width

    @property
    def uses_discriminator(self) -> bool:
        return any(p.discriminator_on for p in self.phases)


def litevae() -> Recipe:
    """LiteVAE (§4.3, App. F): Adam lr 1e-4, betas (0.5, 0.9), batch 16, UNet
    discriminator with a constant adversarial weight (§6: no adaptive weight), wavelet +
    high-pass losses, 100k steps at 128² then 50k at 256² (progressive, §5, Table 5)."""
    # ours: λ_adv 0.1, wavelet and high-pass weights 0.1 (the paper gives no weights);
    # ours: discriminator from step 50k of phase 1 (LDM's disc_start; LiteVAE does not say).
    losses = LossWeights(wavelet=0.1, highpass=0.1, adversarial=0.1)
    common = dict(batch_size=16, lr=1e-4, betas=(0.5, 0.9), losses=losses,
                  discriminator_on=True)
    return Recipe("litevae", (Phase("p128", 100_000, 128, disc_start=50_000, **common),
                              Phase("p256", 50_000, 256, **common)), discriminator="unet")


def dcae() -> Recipe:
    """DC-AE decoupled high-resolution adaptation (§3.2, Fig. 6; App. E): (1) low-res
    full training, L1 + LPIPS, AdamW lr 6.4e-5 wd 0.1; (2) high-res latent adaptation,
    only the "middle layers (encoder's head layers and decoder's input layers)" train, lr
    1.6e-5 wd 1e-3; (3) low-res local refinement, only "the head layers of the decoder",
    with a PatchGAN loss, lr 5.4e-5 betas (0.5, 0.9). Plain autoencoder: no KL.

    How deep the trained layers reach is a phase field, swept (App. G, Fig. 11) with
    ``--set highres-adapt.train_groups=encoder.head.2,decoder.input.2`` and
    ``--set refine.train_groups=decoder.head.2`` (groups in ``DCAE.param_groups``)."""
    # Depth K = 1 stage on each side: §3.2 says "layers" (plural) for the encoder's head,
    # the decoder's input and the decoder's head, i.e. more than the single conv next to
    # the latent (K = 0: encoder.project_out / decoder.project_in / decoder.head), and the
    # same words "head layers" for the encoder (phase 2) and the decoder (phase 3), so one
    # K for both. Fig. 11 (App. G) ablates K, but its values are not in the text we have
    # (the paper text holds only the caption): ours: K = 1 is our reading of §3.2.
    # ours: steps (100k/20k/20k), batch 16, resolutions 256²/512²/256² (the paper's low
    # resolution is 256²; its high-resolution memory figure is at 1024²), LPIPS weight 1.
    # ours: λ_adv 0.1 and the hinge loss in phase 3 (the paper names only "PatchGAN loss").
    rec = LossWeights(kl=0.0)
    return Recipe("dcae", (
        Phase("lowres", 100_000, 256, 16, 6.4e-5, "adamw", weight_decay=0.1, losses=rec),
        Phase("highres-adapt", 20_000, 512, 16, 1.6e-5, "adamw", weight_decay=1e-3,
              train_groups=("encoder.head.1", "decoder.input.1"), losses=rec),
        Phase("refine", 20_000, 256, 16, 5.4e-5, "adamw", betas=(0.5, 0.9),
              train_groups=("decoder.head.1",), discriminator_on=True,
              losses=dataclasses.replace(rec, adversarial=0.1)),
    ), discriminator="patchgan")


def sdvae() -> Recipe:
    """The LDM autoencoder recipe (Rombach et al., ``autoencoder_kl_*`` configs,
    taming ``LPIPSWithDiscriminator``): L1 + LPIPS, KL 1e-6, PatchGAN with hinge loss
    from step 50,001, ``disc_weight`` 0.5 times the adaptive weight, Adam betas
    (0.5, 0.9), 256² crops."""
    # LDM's lr is 4.5e-6 × batch × GPUs; 7.2e-5 is that at batch 16.
    # ours: batch 16 (LDM: 12 per GPU), 200k steps (the config sets no step count).
    losses = LossWeights(adversarial=0.5, adaptive=True)
    return Recipe("sdvae", (Phase("main", 200_000, 256, 16, 7.2e-5, betas=(0.5, 0.9),
                                  losses=losses, discriminator_on=True,
                                  disc_start=50_001),), discriminator="patchgan")


def _finetune(name: str, groups: tuple[str, ...], lr: float, kl: float) -> Recipe:
    """The LDM loss (L1 + LPIPS, PatchGAN hinge, ``disc_weight`` 0.5 times the adaptive
    weight, Adam betas (0.5, 0.9)) on a trained SD-VAE-style model, the setting of
    Stability's decoder fine-tunes (sd-vae-ft-ema: "the same loss configuration as the
    original checkpoint (L1 + LPIPS)", EMA weights, batch 12 per GPU on 16 A100s)."""
    # ours: 20k steps, 256² crops (the fine-tunes were measured at 256²), lr (below).
    # ours: D from step 0 with a 1k-step warm-up: no discriminator is released with the
    # public VAEs, and a random D's adversarial gradient (scaled by the adaptive weight to
    # half the reconstruction gradient) would at first push a trained decoder at random.
    losses = LossWeights(kl=kl, adversarial=0.5, adaptive=True)
    return Recipe(name, (Phase(name.removeprefix("finetune-"), 20_000, 256, 12, lr,
                               betas=(0.5, 0.9), train_groups=groups, losses=losses,
                               discriminator_on=True, disc_warmup=1_000),),
                  discriminator="patchgan")


def finetune_decoder() -> Recipe:
    """Fine-tune the decoder of a trained SD-VAE / diffusers ``AutoencoderKL`` (SD 1.x,
    2.x, SDXL, SD3, FLUX) on new images with the encoder frozen, as Stability did for
    sd-vae-ft-ema / ft-mse ("only the decoder part was finetuned", so it is a drop-in
    replacement): the latents, and every diffusion model trained on them, stay valid.
    ``decoder`` is the decoder and ``post_quant_conv`` (``SDVAE.param_groups``)."""
    # ours: lr 1e-5 (Stability does not state theirs). KL 0: with the encoder frozen the
    # KL term is a constant (its gradient reaches only the encoder).
    return _finetune("finetune-decoder", ("decoder",), 1e-5, 0.0)


def finetune_full() -> Recipe:
    """Fine-tune encoder and decoder with a small learning rate, for when the latent
    space may move (diffusion models trained on the old latents then need fine-tuning
    too); KL 1e-6 as LDM."""
    # ours: lr 1e-6, a tenth of finetune-decoder's, so the latent space drifts slowly.
    return _finetune("finetune-full", ("all",), 1e-6, 1e-6)


def eqvae_finetune() -> Recipe:
    """EQ-VAE (Kouzelis et al. 2025; official ``configs/eqvae_config.yaml``): fine-tune
    encoder and decoder of a trained autoencoder (any ``latentae.load``-able one:
    latentae or diffusers) with the equivariance loss (``losses/regularisers.py``) on
    top of the LDM loss: L1 + LPIPS, KL 1e-6, PatchGAN hinge from step 0 with
    ``disc_weight`` 0.5 times the adaptive weight, Adam betas (0.5, 0.9), 256² crops,
    batch 10 × 2 accumulation rounds, the transform in half the steps (p 0.5);
    "five epochs" of ImageNet (1,281,167 images) at batch 20: 320,292 steps.
    ``--steps-scale`` shrinks the schedule; ``--reference-data`` adds the before/after
    report (with the diffusability diagnostics before and after)."""
    # paper: LDM's lr rule base_learning_rate 4.5e-6 × batch 10 × accumulation 2 × GPUs;
    # ours: one GPU (the GPU count is not stated), so 9e-5.
    # ours: the 1k-step discriminator warm-up of the fine-tune recipes (no D is released
    # with the public VAEs, so a random D must not push the decoder at first).
    # ours: equivariance weight 1 (EQ-VAE swaps the plain reconstruction for the
    # transformed one in those steps; ours adds it: losses/regularisers.py).
    losses = LossWeights(kl=1e-6, adversarial=0.5, adaptive=True, equivariance=1.0,
                         equivariance_p=0.5)
    return Recipe("eqvae-finetune", (Phase("eqvae", 320_292, 256, 20, 9e-5,
                                           betas=(0.5, 0.9), losses=losses,
                                           discriminator_on=True, disc_warmup=1_000),),
                  discriminator="patchgan")


RECIPES = {"litevae": litevae, "dcae": dcae, "sdvae": sdvae,
           "finetune-decoder": finetune_decoder, "finetune-full": finetune_full,
           "eqvae-finetune": eqvae_finetune}


def get_recipe(name: str) -> Recipe:
    """A recipe by name (``litevae``, ``dcae``, ``sdvae``, ``finetune-decoder``,
    ``finetune-full``, ``eqvae-finetune``)."""
    if name not in RECIPES:
        raise InputError(f"unknown recipe {name!r}; valid: {sorted(RECIPES)}")
    return RECIPES[name]()


def scale_steps(recipe: Recipe, factor: float) -> Recipe:
    """Shrink (or grow) every phase's ``steps``, ``disc_start`` and ``disc_warmup`` by
    ``factor`` (at least 1 step per phase), e.g. ``--steps-scale 0.01`` for small runs."""
    if factor <= 0:
        raise InputError(f"steps scale must be positive, got {factor}")
    phases = tuple(dataclasses.replace(p, steps=max(1, round(p.steps * factor)),
                                       disc_start=round(p.disc_start * factor),
                                       disc_warmup=round(p.disc_warmup * factor))
                   for p in recipe.phases)
    return dataclasses.replace(recipe, phases=phases)
