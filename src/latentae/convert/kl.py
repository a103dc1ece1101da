"""SD-VAE weights to and from diffusers ``AutoencoderKL``: an explicit key map.

A diffusers ``AutoencoderKL`` (``autoencoder_kl.py``; the LDM KL-f8 autoencoder of
Rombach et al. 2022) maps 1:1 onto ``latentae.models.sdvae.SDVAE``: module names differ
only in the places the regular expressions below rename, and old checkpoints' attention
projections (1×1 convs named ``query``/``key``/``value``/``proj_attn``) are reshaped to
the Linear layout. No diffusers import is needed to read or write a directory
(``convert/diffusers_dir.py``); ``tests/test_checkpoint_convert.py`` checks parity both
ways against diffusers itself.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from latentae.convert.diffusers_dir import naming_config, read_diffusers_dir, write_diffusers_dir
from latentae.errors import InputError
from latentae.models.sdvae import SDVAE, SDVAEConfig
from latentae.serialization import check_config_fields, check_state_dict, load_state_dict_strict

# (latentae key pattern, diffusers replacement), applied in order; the inverse map
# swaps the two sides. Module names differ only in these places.
_KL_KEY_MAP = [
    (r"^encoder\.down\.(\d+)\.blocks\.(\d+)\.", r"encoder.down_blocks.\1.resnets.\2."),
    (r"^encoder\.down\.(\d+)\.resample\.", r"encoder.down_blocks.\1.downsamplers.0."),
    (r"^decoder\.up\.(\d+)\.blocks\.(\d+)\.", r"decoder.up_blocks.\1.resnets.\2."),
    (r"^decoder\.up\.(\d+)\.resample\.", r"decoder.up_blocks.\1.upsamplers.0."),
    (r"\.mid\.block1\.", r".mid_block.resnets.0."),
    (r"\.mid\.block2\.", r".mid_block.resnets.1."),
    (r"\.mid\.attn\.norm\.", r".mid_block.attentions.0.group_norm."),
    (r"\.mid\.attn\.to_out\.", r".mid_block.attentions.0.to_out.0."),
    (r"\.mid\.attn\.to_", r".mid_block.attentions.0.to_"),
    (r"\.skip\.", r".conv_shortcut."),
    (r"\.norm_out\.", r".conv_norm_out."),
]
_KL_KEY_MAP_INV = [
    (r"\.mid_block\.attentions\.0\.to_out\.0\.", ".mid.attn.to_out."),
    (r"\.mid_block\.attentions\.0\.group_norm\.", ".mid.attn.norm."),
    (r"\.mid_block\.attentions\.0\.to_", ".mid.attn.to_"),
    (r"\.mid_block\.resnets\.0\.", ".mid.block1."),
    (r"\.mid_block\.resnets\.1\.", ".mid.block2."),
    (r"^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"encoder.down.\1.blocks.\2."),
    (r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.resample."),
    (r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.", r"decoder.up.\1.blocks.\2."),
    (r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.", r"decoder.up.\1.resample."),
    (r"\.conv_shortcut\.", ".skip."),
    (r"\.conv_norm_out\.", ".norm_out."),
]
# Old diffusers/LDM checkpoints name the attention projections differently (1×1 convs).
_LEGACY_ATTN = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def _rename(key: str, rules: list[tuple[str, str]]) -> str:
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


def kl_state_dict_to_diffusers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """latentae SD-VAE keys -> diffusers ``AutoencoderKL`` keys."""
    return {_rename(k, _KL_KEY_MAP): v for k, v in sd.items()}


def kl_state_dict_from_diffusers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers ``AutoencoderKL`` keys (current or legacy attention names) -> latentae."""
    out = {}
    for k, v in sd.items():
        for old, new in _LEGACY_ATTN.items():
            if f".attentions.0.{old}." in k:
                k = k.replace(f".attentions.0.{old}.", f".attentions.0.{new}.")
                v = v.reshape(v.shape[0], -1) if v.ndim == 4 else v  # 1×1 conv -> linear
        out[_rename(k, _KL_KEY_MAP_INV)] = v
    return out


def kl_config_from_diffusers(cfg: dict[str, Any]) -> SDVAEConfig:
    """An ``AutoencoderKL`` config dict -> ``SDVAEConfig``; unsupported settings raise."""
    for key, want in (("in_channels", 3), ("out_channels", 3), ("norm_num_groups", 32)):
        if cfg.get(key, want) != want:
            raise InputError(f"AutoencoderKL with {key}={cfg[key]} is not supported "
                             f"(latentae SD-VAE uses {key}={want})")
    if cfg.get("use_quant_conv", True) != cfg.get("use_post_quant_conv", True):
        raise InputError("use_quant_conv and use_post_quant_conv must agree")
    try:  # a field of the wrong kind ("four", 5 for a list) is the file's fault
        widths = tuple(cfg.get("block_out_channels", (64,)))
        shift = cfg.get("shift_factor")
        config = SDVAEConfig(
            encoder_channels=widths, decoder_channels=widths,
            layers_per_block=cfg.get("layers_per_block", 1),
            latent_channels=cfg.get("latent_channels", 4),
            use_quant_conv=cfg.get("use_quant_conv", True),
            mid_attention=cfg.get("mid_block_add_attention", True),
            scaling_factor=cfg.get("scaling_factor", 0.18215),
            shift_factor=0.0 if shift is None else float(shift))
    except (TypeError, ValueError) as e:
        raise InputError(f"AutoencoderKL config does not build an SD-VAE: {e}") from e
    check_config_fields(config, "AutoencoderKL config")
    return config


def kl_config_to_diffusers(config: SDVAEConfig) -> dict[str, Any]:
    """``SDVAEConfig`` -> an ``AutoencoderKL`` config dict (errors where none exists)."""
    if config.encoder_channels != config.decoder_channels:
        raise InputError("diffusers AutoencoderKL needs equal encoder and decoder widths")
    if config.decoder_norm != "group" or any(c % 32 for c in config.encoder_channels):
        raise InputError("diffusers AutoencoderKL needs a GroupNorm(32) decoder and widths "
                         "that are multiples of 32")
    n = len(config.encoder_channels)
    return {
        "in_channels": 3, "out_channels": 3, "act_fn": "silu", "norm_num_groups": 32,
        "down_block_types": ["DownEncoderBlock2D"] * n,
        "up_block_types": ["UpDecoderBlock2D"] * n,
        "block_out_channels": list(config.encoder_channels),
        "layers_per_block": config.layers_per_block,
        "latent_channels": config.latent_channels, "sample_size": 256,
        "scaling_factor": config.scaling_factor, "shift_factor": config.shift_factor or None,
        "use_quant_conv": config.use_quant_conv, "use_post_quant_conv": config.use_quant_conv,
        "mid_block_add_attention": config.mid_attention, "force_upcast": True,
    }


def kl_from_diffusers(source: Any) -> SDVAE:
    """A latentae SD-VAE from a diffusers ``AutoencoderKL`` module or directory."""
    if isinstance(source, torch.nn.Module):
        cfg, sd = dict(source.config), source.state_dict()
        config = kl_config_from_diffusers(cfg)
    else:
        cfg, sd = read_diffusers_dir(source, expect="AutoencoderKL")
        with naming_config(source):
            config = kl_config_from_diffusers(cfg)
    ours = kl_state_dict_from_diffusers(sd)
    with torch.device("meta"):  # config and weights must agree before memory is spent
        check_state_dict(SDVAE(config), ours, source="AutoencoderKL")
    model = SDVAE(config)
    load_state_dict_strict(model, ours, source="AutoencoderKL")
    return model


def kl_to_diffusers(model: SDVAE, out_dir: str | Path) -> None:
    """Write a directory that ``diffusers.AutoencoderKL.from_pretrained`` loads."""
    if not isinstance(model, SDVAE):
        raise InputError(f"only SD-VAE models export to AutoencoderKL, not {model.family}")
    write_diffusers_dir(out_dir, "AutoencoderKL", kl_config_to_diffusers(model.config),
                        kl_state_dict_to_diffusers(model.state_dict()))
