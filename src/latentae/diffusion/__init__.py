"""Diffusion on latentae's latents: DiT and U-ViT backbones (presets, save/load,
conversion), objectives (``ddpm``, ``flow``, ``flow-sit``), noise schedules, samplers and
guidance."""

from latentae.diffusion.base import DiffusionModel, count_params  # noqa: F401
from latentae.diffusion.convert import load_official  # noqa: F401
from latentae.diffusion.ddpm import (  # noqa: F401
    NUM_TIMESTEPS,
    Schedule,
    ddpm_loss,
    ddpm_loss_terms,
    ddpm_schedule,
    linear_betas,
    q_sample,
    respace,
    space_timesteps,
)
from latentae.diffusion.dit import DiT, DiTConfig  # noqa: F401
from latentae.diffusion.flow import (  # noqa: F401
    FLOW_OBJECTIVES,
    T_SAMPLINGS,
    flow_interpolate,
    flow_loss,
    flow_loss_terms,
    flow_target,
    sample_flow_t,
)
from latentae.diffusion.registry import (  # noqa: F401
    create_diffusion,
    describe_presets,
    flops,
    list_diffusion,
    load,
)
from latentae.diffusion.samplers import (  # noqa: F401
    SAMPLERS,
    ddpm_sampling_schedule,
    dpm_solver_grid,
    dpm_solver_orders,
    dpm_solver_timesteps,
    flow_times,
    guided_model,
    sample,
)
from latentae.diffusion.schedules import SCHEDULES, NoiseSchedule, get_schedule  # noqa: F401
from latentae.diffusion.uvit import UViT, UViTConfig  # noqa: F401
