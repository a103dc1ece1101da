"""Weights to and from diffusers, and one loader for every kind of model reference.

A diffusers ``AutoencoderKL`` directory (``config.json`` with ``_class_name`` +
``diffusion_pytorch_model.safetensors``) maps 1:1 onto the latentae SD-VAE through the
explicit key map below; no diffusers import is needed to read or write one. DC-AE
(``AutoencoderDC``) conversion lives in ``convert_dcae.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from latentae.checkpoint import atomic_write_bytes, load_state_dict_strict
from latentae.models.autoencoder import Autoencoder
from latentae.models.sdvae import SDVAE, SDVAEConfig

DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
DIFFUSERS_VERSION = "0.32.0"  # written into exported configs; any recent diffusers reads them

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
            raise ValueError(f"AutoencoderKL with {key}={cfg[key]} is not supported "
                             f"(latentae SD-VAE uses {key}={want})")
    if cfg.get("use_quant_conv", True) != cfg.get("use_post_quant_conv", True):
        raise ValueError("use_quant_conv and use_post_quant_conv must agree")
    widths = tuple(cfg.get("block_out_channels", (64,)))
    shift = cfg.get("shift_factor")
    return SDVAEConfig(
        encoder_channels=widths, decoder_channels=widths,
        layers_per_block=cfg.get("layers_per_block", 1),
        latent_channels=cfg.get("latent_channels", 4),
        use_quant_conv=cfg.get("use_quant_conv", True),
        mid_attention=cfg.get("mid_block_add_attention", True),
        scaling_factor=cfg.get("scaling_factor", 0.18215),
        shift_factor=0.0 if shift is None else float(shift))


def kl_config_to_diffusers(config: SDVAEConfig) -> dict[str, Any]:
    """``SDVAEConfig`` -> an ``AutoencoderKL`` config dict (errors where none exists)."""
    if config.encoder_channels != config.decoder_channels:
        raise ValueError("diffusers AutoencoderKL needs equal encoder and decoder widths")
    if config.decoder_norm != "group" or any(c % 32 for c in config.encoder_channels):
        raise ValueError("diffusers AutoencoderKL needs a GroupNorm(32) decoder and widths "
                         "that are multiples of 32")
    n = len(config.encoder_channels)
    return {
        "_class_name": "AutoencoderKL", "_diffusers_version": DIFFUSERS_VERSION,
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


def read_diffusers_dir(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(config, state_dict)`` of a diffusers model directory (safetensors weights)."""
    path = Path(path)
    cfg_file, weights = path / "config.json", path / DIFFUSERS_WEIGHTS
    if not cfg_file.is_file():
        raise ValueError(f"{path} has no config.json")
    if not weights.is_file():
        raise ValueError(f"{path} has no {DIFFUSERS_WEIGHTS} (only safetensors weights "
                         "are read; re-save the model with safe_serialization=True)")
    return json.loads(cfg_file.read_text()), load_file(str(weights))


def kl_from_diffusers(source: Any) -> SDVAE:
    """A latentae SD-VAE from a diffusers ``AutoencoderKL`` module or directory."""
    if isinstance(source, torch.nn.Module):
        cfg, sd = dict(source.config), source.state_dict()
    else:
        cfg, sd = read_diffusers_dir(source)
        if cfg.get("_class_name") != "AutoencoderKL":
            raise ValueError(f"{source} holds a {cfg.get('_class_name')!r}, not AutoencoderKL")
    model = SDVAE(kl_config_from_diffusers(cfg))
    load_state_dict_strict(model, kl_state_dict_from_diffusers(sd), source="AutoencoderKL")
    return model


def kl_to_diffusers(model: SDVAE, out_dir: str | Path) -> None:
    """Write a directory that ``diffusers.AutoencoderKL.from_pretrained`` loads."""
    if not isinstance(model, SDVAE):
        raise ValueError(f"only SD-VAE models export to AutoencoderKL, not {model.family}")
    cfg = kl_config_to_diffusers(model.config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous().cpu()
          for k, v in kl_state_dict_to_diffusers(model.state_dict()).items()}
    tmp = out / (DIFFUSERS_WEIGHTS + ".tmp")
    save_file(sd, str(tmp), metadata={"format": "pt"})
    tmp.replace(out / DIFFUSERS_WEIGHTS)
    atomic_write_bytes(out / "config.json", (json.dumps(cfg, indent=2) + "\n").encode())


def _diffusers_class(path: Path) -> str | None:
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return cfg.get("_class_name") if isinstance(cfg, dict) else None


def load_any(spec: str | Path, random_init: bool = False,
             device: str | torch.device = "cpu") -> Autoencoder:
    """Load a saved latentae directory, a diffusers AutoencoderKL/AutoencoderDC directory,
    or (with ``random_init=True``) build a preset by name."""
    from latentae.checkpoint import load
    from latentae.registry import create_model, list_models

    path = Path(spec)
    if path.is_dir():
        cls = _diffusers_class(path)
        if cls == "AutoencoderKL":
            return kl_from_diffusers(path).to(device)
        if cls == "AutoencoderDC":
            from latentae.convert_dcae import dcae_from_diffusers
            return dcae_from_diffusers(path).to(device)
        return load(path, device=device)
    if str(spec) in list_models():
        if not random_init:
            raise ValueError(f"{spec!r} is a preset name, not saved weights: pass "
                             "--random-init for a smoke run, or give a model directory")
        return create_model(str(spec)).to(device)
    raise ValueError(f"{spec!r} is neither a model directory nor a preset name; presets: "
                     f"{', '.join(list_models())}")


def convert_directory(src: str | Path, out: str | Path, to: str | None = None) -> str:
    """Convert ``src`` (diffusers or latentae directory) into the other format at ``out``.
    Returns the written format's name."""
    src = Path(src)
    cls = _diffusers_class(src) if src.is_dir() else None
    if cls in ("AutoencoderKL", "AutoencoderDC"):
        if to == "diffusers":
            raise ValueError(f"{src} is already a diffusers {cls} directory")
        load_any(src).save_pretrained(str(out))
        return "latentae"
    if to == "latentae":
        raise ValueError(f"{src} is not a diffusers AutoencoderKL/AutoencoderDC directory")
    model = load_any(src)
    export_diffusers(model, out)
    return "diffusers"


def export_diffusers(model: Autoencoder, out: str | Path) -> None:
    """Write ``model`` in diffusers format (SD-VAE -> AutoencoderKL, DC-AE -> AutoencoderDC)."""
    if model.family == "sdvae":
        kl_to_diffusers(model, out)
    elif model.family == "dcae":
        from latentae.convert_dcae import dcae_to_diffusers
        dcae_to_diffusers(model, out)
    else:
        raise ValueError(f"{model.family} has no diffusers equivalent: diffusers can load "
                         "SD-VAE (AutoencoderKL) and DC-AE (AutoencoderDC) models only")
