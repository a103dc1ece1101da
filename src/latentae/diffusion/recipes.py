"""Training recipes of the diffusion releases: optimizer, batch, warm-up, EMA, length and the
sampler each release evaluates with. A recipe fills the values a ``latentae diffusion
train`` command does not set (``latentae.diffusion.config.make_diffusion_config``).

- ``dit``: facebookresearch/DiT ``train.py`` — AdamW lr 1e-4, weight decay 0, default Adam
  betas (0.9, 0.999), constant lr (no warm-up), global batch 256, EMA 0.9999, no gradient
  clipping; 400K steps (the paper's model comparisons, §5); evaluation sampler DDPM 250
  steps, guidance 1.5 (DiT §5.1; DC-AE appendix B samples its DiT with 1.3).
- ``uvit``: the U-ViT release ``configs/imagenet256_uvit_huge.py`` and the DC-AE diffusion
  README (``train_dc_ae_diffusion_model``) — AdamW lr 2e-4, weight decay 0.03, betas
  (0.99, 0.99), constant lr after a linear warm-up of 5000 steps, global batch 1024
  (DC-AE: 128 × 8 GPUs), EMA 0.9999 (DC-AE), no gradient clipping (DC-AE's ``clip_grad``
  is ``None``), 500K steps (DC-AE ``max_steps``); the ``scaled-linear`` schedule with steps
  numbered 1 … 1000 (efficientvit ``UViTSchedule``, U-ViT ``stable_diffusion_beta_schedule``);
  singlestep DPM-Solver++ ``dpm++s`` 30 steps (order 3, ``fast``, time-uniform grid to t = 1/N:
  ``DPM_Solver(predict_x0=True).sample(steps=30, eps=1/N, T=1)``), guidance 1.5 (DC-AE
  appendix B, README: "cfg=1.5 for all other models").
- ``usit``: the DC-AE README's USiT (``uvit.train_scheduler=SiTSampler``) — the ``uvit``
  network and optimizer settings except AdamW lr 1e-4 and weight decay 0; the ``flow-sit``
  objective (SiT's linear path, velocity, raw t); ``dopri5`` (atol 1e-6, rtol 1e-3) on 250
  output times (``uvit.eval_scheduler=ODE_dopri5 uvit.num_inference_steps=250``), guidance
  1.2 (USiT-H; the README gives 1.15 for USiT-2B).

Ours, in both: the warm-up is ``lr·min(1, (k+1)/warmup)`` at step k (the U-ViT release's
``min(k/warmup, 1)`` spends its first step at lr 0); the EMA is the training loop's, whose
decay ramps up as ``min(d, (1+n)/(10+n))`` (the releases start at ``d``); the sample grid
drawn during training uses the cheaper ``grid_*`` settings below.
"""

from __future__ import annotations

import dataclasses

from latentae.errors import unknown_choice


@dataclasses.dataclass(frozen=True)
class DiffusionRecipe:
    """One release's training settings. ``batch_size`` is the global batch (all processes)."""

    name: str
    lr: float
    batch_size: int
    weight_decay: float
    betas: tuple[float, float]
    warmup_steps: int
    ema_decay: float
    grad_clip: float  # 0: none (the loop still skips non-finite steps)
    steps: int
    sampler: str      # the release's evaluation sampler, steps and guidance
    sample_steps: int
    guidance: float
    objective: str = "ddpm"     # the release's objective and noise schedule
    schedule: str = "linear"


RECIPES: dict[str, DiffusionRecipe] = {
    "dit": DiffusionRecipe("dit", lr=1e-4, batch_size=256, weight_decay=0.0,
                           betas=(0.9, 0.999), warmup_steps=0, ema_decay=0.9999,
                           grad_clip=0.0, steps=400_000, sampler="ddpm", sample_steps=250,
                           guidance=1.5),
    "uvit": DiffusionRecipe("uvit", lr=2e-4, batch_size=1024, weight_decay=0.03,
                            betas=(0.99, 0.99), warmup_steps=5000, ema_decay=0.9999,
                            grad_clip=0.0, steps=500_000, sampler="dpm++s", sample_steps=30,
                            guidance=1.5, schedule="scaled-linear"),
    "usit": DiffusionRecipe("usit", lr=1e-4, batch_size=1024, weight_decay=0.0,
                            betas=(0.99, 0.99), warmup_steps=5000, ema_decay=0.9999,
                            grad_clip=0.0, steps=500_000, sampler="dopri5", sample_steps=250,
                            guidance=1.2, objective="flow-sit"),
}

# Ours: the grid drawn every --sample-every steps, per objective (cheap, few steps).
GRID_SAMPLER = {"ddpm": "dpm++2m", "flow": "heun", "flow-sit": "heun"}
GRID_STEPS = 25


def get_recipe(name: str) -> DiffusionRecipe:
    """The recipe ``name``; an unknown name is an ``InputError`` with the valid ones."""
    if name not in RECIPES:
        raise unknown_choice("diffusion recipe", name, RECIPES)
    return RECIPES[name]


def warmup_lr(lr: float, warmup_steps: int, step: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based): linear warm-up, then ``lr``."""
    if warmup_steps <= 0:
        return lr
    return lr * min(1.0, (step + 1) / warmup_steps)
