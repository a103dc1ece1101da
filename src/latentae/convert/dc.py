"""DC-AE weights to and from diffusers ``AutoencoderDC`` (``autoencoder_dc.py``, the
reference implementation of DC-AE, Chen et al. 2025).

The key map is explicit and generated from the config (one entry per tensor), because
module indices differ: diffusers packs each stage into an ``nn.Sequential`` (the
down-sampler last in the encoder, the up-sampler first in the decoder). Two tensors
change layout, not just name:

- our LiteMLA ``qkv`` 1×1 conv ``(3D, C, 1, 1)`` = diffusers ``to_q``, ``to_k``, ``to_v``
  Linear weights ``(D, C)`` stacked in that order (DC-AE's original layout);
- our 1×1 conv ``proj`` ``(C, D, 1, 1)`` = diffusers Linear ``to_out`` ``(C, D)``.

No diffusers import is needed to read or write a directory (``convert/diffusers_dir.py``);
``tests/test_dcae.py`` checks parity with diffusers for every published configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from latentae.convert.diffusers_dir import naming_config, read_diffusers_dir, write_diffusers_dir
from latentae.errors import InputError
from latentae.models.dcae import DCAE, RES, DCAEConfig, check_config
from latentae.serialization import check_config_fields

# AutoencoderDC constructor defaults (diffusers 0.32-0.42), used for keys a config omits.
_DIFFUSERS_DEFAULTS: dict[str, Any] = {
    "in_channels": 3, "latent_channels": 32, "attention_head_dim": 32,
    "encoder_block_types": "ResBlock", "decoder_block_types": "ResBlock",
    "encoder_block_out_channels": (128, 256, 512, 512, 1024, 1024),
    "decoder_block_out_channels": (128, 256, 512, 512, 1024, 1024),
    "encoder_layers_per_block": (2, 2, 2, 3, 3, 3),
    "decoder_layers_per_block": (3, 3, 3, 3, 3, 3),
    "encoder_qkv_multiscales": ((), (), (), (5,), (5,), (5,)),
    "decoder_qkv_multiscales": ((), (), (), (5,), (5,), (5,)),
    "upsample_block_type": "pixel_shuffle", "downsample_block_type": "pixel_unshuffle",
    "decoder_norm_types": "rms_norm", "decoder_act_fns": "silu",
    "encoder_out_shortcut": True, "decoder_in_shortcut": True,
    "decoder_conv_act_fn": "relu", "scaling_factor": 1.0,
}
_OLD_NAMES = {"block_out_channels"}  # early AutoencoderDC configs: one tuple for both sides

# Marks for tensors whose layout changes (see module docstring).
_LINEAR = "linear"  # our (O, I, 1, 1) conv weight <-> diffusers (O, I) Linear weight


def is_dcae_diffusers_config(cfg: dict) -> bool:
    """True for the ``config.json`` of a diffusers ``AutoencoderDC`` directory."""
    return isinstance(cfg, dict) and cfg.get("_class_name") == "AutoencoderDC"


# --- config --------------------------------------------------------------------------
def _with_defaults(cfg: dict[str, Any]) -> dict[str, Any]:
    """Fill omitted keys with the constructor defaults; unknown keys raise."""
    unknown = sorted(k for k in cfg if not k.startswith("_")
                     and k not in _DIFFUSERS_DEFAULTS and k not in _OLD_NAMES)
    if unknown:
        raise InputError(f"AutoencoderDC config has key(s) latentae does not know: {unknown}")
    c = {**_DIFFUSERS_DEFAULTS, **cfg}
    if "block_out_channels" in cfg:
        c["encoder_block_out_channels"] = cfg["block_out_channels"]
        c["decoder_block_out_channels"] = cfg["block_out_channels"]
    if c["in_channels"] != 3:
        raise InputError(f"latentae DC-AE models take RGB input, got "
                         f"in_channels={c['in_channels']}")
    return c


def config_from_diffusers(cfg: dict[str, Any]) -> DCAEConfig:
    """A diffusers ``AutoencoderDC`` config dict -> ``DCAEConfig`` (unknown keys raise)."""
    c = _with_defaults(cfg)
    try:
        config = _dcae_config(c)
    except (TypeError, ValueError) as e:  # a field of the wrong kind ("four", 5 for a list)
        raise InputError(f"AutoencoderDC config does not build a DC-AE: {e}") from e
    check_config_fields(config, "AutoencoderDC config")
    check_config(config)
    return config


def _dcae_config(c: dict[str, Any]) -> DCAEConfig:
    n = len(c["encoder_block_out_channels"])

    def per_stage(v: Any) -> tuple:
        return (v,) * n if isinstance(v, str) else tuple(v)

    return DCAEConfig(
        latent_channels=c["latent_channels"],
        encoder_widths=tuple(c["encoder_block_out_channels"]),
        decoder_widths=tuple(c["decoder_block_out_channels"]),
        encoder_depths=tuple(c["encoder_layers_per_block"]),
        decoder_depths=tuple(c["decoder_layers_per_block"]),
        encoder_block_types=per_stage(c["encoder_block_types"]),
        decoder_block_types=per_stage(c["decoder_block_types"]),
        encoder_qkv_multiscales=tuple(tuple(s) for s in c["encoder_qkv_multiscales"]),
        decoder_qkv_multiscales=tuple(tuple(s) for s in c["decoder_qkv_multiscales"]),
        decoder_norms=per_stage(c["decoder_norm_types"]),
        decoder_acts=per_stage(c["decoder_act_fns"]),
        decoder_head_act=c["decoder_conv_act_fn"], attention_head_dim=c["attention_head_dim"],
        downsample=c["downsample_block_type"], upsample=c["upsample_block_type"],
        encoder_out_shortcut=c["encoder_out_shortcut"],
        decoder_in_shortcut=c["decoder_in_shortcut"],
        scaling_factor=float(c["scaling_factor"]))


def config_to_diffusers(config: DCAEConfig) -> dict[str, Any]:
    """``DCAEConfig`` -> the keyword arguments of ``diffusers.AutoencoderDC``."""
    if not config.stage_shortcuts:
        raise InputError("diffusers AutoencoderDC always has the stage shortcuts: a model "
                         "with stage_shortcuts=False cannot be exported")
    if config.shift_factor != 0.0:
        raise InputError(f"diffusers AutoencoderDC has no shift_factor (model has "
                         f"{config.shift_factor}): fold it into the diffusion pipeline")
    return {
        "in_channels": 3, "latent_channels": config.latent_channels,
        "attention_head_dim": config.attention_head_dim,
        "encoder_block_types": list(config.encoder_block_types),
        "decoder_block_types": list(config.decoder_block_types),
        "encoder_block_out_channels": list(config.encoder_widths),
        "decoder_block_out_channels": list(config.decoder_widths),
        "encoder_layers_per_block": list(config.encoder_depths),
        "decoder_layers_per_block": list(config.decoder_depths),
        "encoder_qkv_multiscales": [list(s) for s in config.encoder_qkv_multiscales],
        "decoder_qkv_multiscales": [list(s) for s in config.decoder_qkv_multiscales],
        "upsample_block_type": config.upsample, "downsample_block_type": config.downsample,
        "decoder_norm_types": list(config.decoder_norms),
        "decoder_act_fns": list(config.decoder_acts),
        "encoder_out_shortcut": config.encoder_out_shortcut,
        "decoder_in_shortcut": config.decoder_in_shortcut,
        "decoder_conv_act_fn": config.decoder_head_act,
        "scaling_factor": config.scaling_factor,
    }


# --- key map -------------------------------------------------------------------------
def _params(ours: str, theirs: str, names: tuple[str, ...]) -> dict[str, Any]:
    return {f"{ours}.{n}": f"{theirs}.{n}" for n in names}


def _norm(ours: str, theirs: str, kind: str) -> dict[str, Any]:
    names = ("weight", "bias")
    if kind == "batch_norm":
        names += ("running_mean", "running_var", "num_batches_tracked")
    return _params(ours, theirs, names)


def _resblock(ours: str, theirs: str, norm: str) -> dict[str, Any]:
    return {**_params(f"{ours}.conv1", f"{theirs}.conv1", ("weight", "bias")),
            f"{ours}.conv2.weight": f"{theirs}.conv2.weight",
            **_norm(f"{ours}.norm", f"{theirs}.norm", norm)}


def _vit_block(ours: str, theirs: str, norm: str, scales: tuple[int, ...]) -> dict[str, Any]:
    a, d = f"{ours}.attn", f"{theirs}.attn"
    m: dict[str, Any] = {f"{a}.qkv.weight": tuple(f"{d}.to_{x}.weight" for x in "qkv"),
                         f"{a}.proj.weight": (_LINEAR, f"{d}.to_out.weight")}
    for j in range(len(scales)):
        m[f"{a}.aggreg.{j}.depthwise.weight"] = f"{d}.to_qkv_multiscale.{j}.proj_in.weight"
        m[f"{a}.aggreg.{j}.pointwise.weight"] = f"{d}.to_qkv_multiscale.{j}.proj_out.weight"
    m |= _norm(f"{a}.norm", f"{d}.norm_out", norm)
    b, g = f"{ours}.mbconv", f"{theirs}.conv_out"
    m |= _params(f"{b}.inverted", f"{g}.conv_inverted", ("weight", "bias"))
    m |= _params(f"{b}.depthwise", f"{g}.conv_depth", ("weight", "bias"))
    m |= {f"{b}.point.weight": f"{g}.conv_point.weight",
          **_norm(f"{b}.norm", f"{g}.norm", "rms_norm")}
    return m


def _block(kind: str, ours: str, theirs: str, norm: str, scales: tuple[int, ...]) -> dict:
    return (_resblock(ours, theirs, norm) if kind == RES
            else _vit_block(ours, theirs, norm, scales))


def key_map(config: DCAEConfig) -> dict[str, Any]:
    """latentae key -> diffusers key; or ``(q, k, v)`` keys for the fused qkv weight, or
    ``("linear", key)`` for a 1×1 conv stored as a Linear weight by diffusers."""
    c, n = config, len(config.encoder_widths)
    conv = ("weight", "bias")
    m: dict[str, Any] = {}
    in_conv = "" if c.encoder_depths[0] > 0 else ".conv"  # conv, or the down block's conv
    m |= _params(f"encoder.project_in{in_conv}", f"encoder.conv_in{in_conv}", conv)
    for i, depth in enumerate(c.encoder_depths):
        for j in range(depth):
            m |= _block(c.encoder_block_types[i], f"encoder.stages.{i}.blocks.{j}",
                        f"encoder.down_blocks.{i}.{j}", "rms_norm", c.encoder_qkv_multiscales[i])
        if i < n - 1 and depth > 0:
            m |= _params(f"encoder.stages.{i}.down.conv", f"encoder.down_blocks.{i}.{depth}.conv",
                         conv)
    m |= _params("encoder.project_out", "encoder.conv_out", conv)
    m |= _params("decoder.project_in", "decoder.conv_in", conv)
    for i, depth in enumerate(c.decoder_depths):
        has_up = int(i < n - 1 and depth > 0)
        if has_up:
            m |= _params(f"decoder.stages.{i}.up.conv", f"decoder.up_blocks.{i}.0.conv", conv)
        for j in range(depth):
            m |= _block(c.decoder_block_types[i], f"decoder.stages.{i}.blocks.{j}",
                        f"decoder.up_blocks.{i}.{j + has_up}", c.decoder_norms[i],
                        c.decoder_qkv_multiscales[i])
    m |= _norm("decoder.head.norm", "decoder.norm_out", "rms_norm")
    out_conv = "" if c.decoder_depths[0] > 0 else ".conv"
    m |= _params(f"decoder.head.conv{out_conv}", f"decoder.conv_out{out_conv}", conv)
    return m


# --- state dicts -----------------------------------------------------------------------
def _sources(entry: Any) -> tuple[str, ...]:
    """The diffusers keys one ``key_map`` entry reads."""
    if isinstance(entry, str):
        return (entry,)
    return entry[1:] if entry[0] == _LINEAR else entry


def state_dict_from_diffusers(config: DCAEConfig,
                              sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers ``AutoencoderDC`` state dict -> ours (new float32 tensors)."""
    kmap = key_map(config)
    needed = {k for v in kmap.values() for k in _sources(v)}
    missing, unexpected = sorted(needed - set(sd)), sorted(set(sd) - needed)
    if missing or unexpected:
        raise InputError(f"AutoencoderDC weights do not match the config: missing "
                         f"{missing[:5]}{' ...' if len(missing) > 5 else ''}, unexpected "
                         f"{unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")

    def get(key: str) -> torch.Tensor:
        t = sd[key].detach()
        return t.to(torch.float32, copy=True) if t.is_floating_point() else t.clone()

    out = {}
    for ours, theirs in kmap.items():
        if isinstance(theirs, str):
            out[ours] = get(theirs)
        elif theirs[0] == _LINEAR:
            out[ours] = get(theirs[1])[:, :, None, None]  # (O, I) -> (O, I, 1, 1)
        else:
            out[ours] = torch.cat([get(k) for k in theirs])[:, :, None, None]
    return out


def state_dict_to_diffusers(config: DCAEConfig,
                            sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict -> diffusers ``AutoencoderDC`` keys and layouts."""
    kmap = key_map(config)
    if set(sd) != set(kmap):
        odd = sorted(set(sd) ^ set(kmap))
        raise InputError(f"state dict does not match the DC-AE config: {odd[:5]}")
    out = {}
    for ours, theirs in kmap.items():
        t = sd[ours].detach()
        if isinstance(theirs, str):
            out[theirs] = t
        elif theirs[0] == _LINEAR:
            out[theirs[1]] = t.flatten(1)  # (O, I, 1, 1) -> (O, I)
        else:
            for key, part in zip(theirs, t.flatten(1).chunk(3)):
                out[key] = part.clone()  # own storage: safetensors refuses shared tensors
    return out


# --- models and directories ------------------------------------------------------------
def dcae_from_diffusers(module_or_dir: Any) -> DCAE:
    """A latentae DC-AE (float32, eval mode) from a diffusers ``AutoencoderDC`` module or
    a directory it saved (``config.json`` + ``diffusion_pytorch_model.safetensors``)."""
    if isinstance(module_or_dir, torch.nn.Module):
        cfg, sd = dict(module_or_dir.config), module_or_dir.state_dict()
        config = config_from_diffusers(cfg)
    else:
        cfg, sd = read_diffusers_dir(module_or_dir, expect="AutoencoderDC")
        with naming_config(module_or_dir):
            config = config_from_diffusers(cfg)
    ours = state_dict_from_diffusers(config, sd)
    with torch.device("meta"):  # no random init: every tensor comes from ``ours``
        model = DCAE(config)
    try:
        model.load_state_dict(ours, strict=True, assign=True)
    except RuntimeError as e:
        raise InputError(f"AutoencoderDC weights do not fit the config: {e}") from e
    return model.eval()


def dcae_to_diffusers(model: DCAE, out_dir: str | Path) -> None:
    """Write a directory that ``diffusers.AutoencoderDC.from_pretrained`` loads."""
    if not isinstance(model, DCAE):
        raise InputError(f"only DC-AE models export to AutoencoderDC, not {model.family}")
    write_diffusers_dir(out_dir, "AutoencoderDC", config_to_diffusers(model.config),
                        state_dict_to_diffusers(model.config, model.state_dict()))
