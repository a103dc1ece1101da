"""Diffusion on latents: objectives (``ddpm``, ``flow``), samplers and guidance."""

from latentae.diffusion.ddpm import NUM_TIMESTEPS, Schedule, ddpm_loss, ddpm_loss_terms, ddpm_schedule, linear_betas, q_sample, respace, space_timesteps  # noqa: E501, F401, I001
from latentae.diffusion.flow import T_SAMPLINGS, flow_interpolate, flow_loss, flow_loss_terms, sample_flow_t  # noqa: E501, F401, I001
from latentae.diffusion.samplers import SAMPLERS, ddpm_sampling_schedule, dpm_solver_timesteps, flow_times, guided_model, sample  # noqa: E501, F401, I001
