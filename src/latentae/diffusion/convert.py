"""Weight layouts of other codebases -> latentae diffusion models, and DiT -> diffusers.

* **diffusers** ``DiTTransformer2DModel``: split ``qkv`` into ``to_q/to_k/to_v``, rename,
  and repeat our one timestep/class embedder into every block (diffusers keeps a copy per
  block). Its position embedding is a non-persistent buffer, so ``pos_embed`` is dropped
  one way and recomputed the other. Stock diffusers embeds timesteps with frequencies
  ``10000^(-i/(half-1))`` (``downscale_freq_shift=1``) where the DiT release uses
  ``10000^(-i/half)``; :func:`to_diffusers` sets the release's value on the built
  module (not storable in its config), so outputs agree to float rounding.
* **Official releases** (:func:`load_official`): the DiT release (facebookresearch/DiT
  ``models.py``) uses our key names; the U-ViT release (thu-ml/U-ViT ``libs/uvit.py``)
  names its label table ``label_emb.weight`` (its ``num_classes=1001`` includes the
  null class) and the DC-AE release (mit-han-lab/efficientvit
  ``diffusioncore/models/uvit.py``) ``label_emb.embedding_table.weight``, nesting the
  weights as ``{"ema": {name: {"uvit.<key>" | "dit.<key>": tensor}}}`` in its training
  checkpoints and as ``diffusion_model.<key>`` in its Hugging Face files. Learned sigma,
  the MLP ratio, U-ViT's time MLP, qkv bias, final conv and the label table's layout
  (null class or not, none when unconditional) are read from the weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from latentae.diffusion.base import DiffusionModel
from latentae.diffusion.dit import DiT, DiTConfig
from latentae.diffusion.layers import sincos_pos_embed_2d
from latentae.diffusion.registry import build, get_preset, preset_config
from latentae.errors import InputError
from latentae.serialization import load_state_dict_strict

# latentae DiT module -> diffusers module (parameter suffix .weight/.bias kept)
_DIT_TOP = {"x_embedder.proj": "pos_embed.proj",
            "final_layer.adaLN_modulation.1": "proj_out_1",
            "final_layer.linear": "proj_out_2"}
_DIT_BLOCK = {"attn.proj": "attn1.to_out.0", "mlp.fc1": "ff.net.0.proj",
              "mlp.fc2": "ff.net.2", "adaLN_modulation.1": "norm1.linear"}
_DIT_EMBED = {"t_embedder.mlp.0": "norm1.emb.timestep_embedder.linear_1",
              "t_embedder.mlp.2": "norm1.emb.timestep_embedder.linear_2",
              "y_embedder.embedding_table": "norm1.emb.class_embedder.embedding_table"}
_QKV = ("to_q", "to_k", "to_v")


def diffusers_dit_config(config: DiTConfig) -> dict[str, Any]:
    """``DiTTransformer2DModel(**kwargs)`` arguments for the same architecture (the DiT
    LayerNorm eps 1e-6; diffusers' default 1e-5 would differ)."""
    if config.mlp_ratio != 4.0:
        raise InputError(f"diffusers' DiT has a fixed MLP ratio 4; this model has "
                         f"{config.mlp_ratio}")
    return {"num_attention_heads": config.num_heads,
            "attention_head_dim": config.hidden_size // config.num_heads,
            "in_channels": config.in_channels,
            "out_channels": config.in_channels * (2 if config.learn_sigma else 1),
            "num_layers": config.depth, "sample_size": config.input_size,
            "patch_size": config.patch_size, "num_embeds_ada_norm": config.num_classes,
            "activation_fn": "gelu-approximate", "attention_bias": True,
            "norm_type": "ada_norm_zero", "norm_elementwise_affine": False, "norm_eps": 1e-6}


def dit_to_diffusers(state_dict: Mapping[str, torch.Tensor], depth: int) -> dict:
    """latentae DiT state dict -> ``DiTTransformer2DModel`` state dict."""
    out = {}
    for key, v in state_dict.items():
        if key == "pos_embed":
            continue  # diffusers recomputes it (non-persistent buffer)
        module, param = key.rsplit(".", 1)
        if module in _DIT_TOP:
            out[f"{_DIT_TOP[module]}.{param}"] = v.clone()
        elif module in _DIT_EMBED:  # one shared embedder -> a copy in every block
            for i in range(depth):
                out[f"transformer_blocks.{i}.{_DIT_EMBED[module]}.{param}"] = v.clone()
        elif module.startswith("blocks.") and module.split(".", 2)[2] == "attn.qkv":
            i = module.split(".")[1]
            for name, part in zip(_QKV, v.chunk(3, dim=0)):
                out[f"transformer_blocks.{i}.attn1.{name}.{param}"] = part.clone()
        elif module.startswith("blocks.") and module.split(".", 2)[2] in _DIT_BLOCK:
            _, i, rest = module.split(".", 2)
            out[f"transformer_blocks.{i}.{_DIT_BLOCK[rest]}.{param}"] = v.clone()
        else:
            raise InputError(f"not a latentae DiT key: {key!r}")
    return out


def dit_from_diffusers(state_dict: Mapping[str, torch.Tensor], config: DiTConfig) -> dict:
    """``DiTTransformer2DModel`` state dict -> latentae DiT state dict. The per-block
    embedder copies must be equal (ours is shared); ``pos_embed`` is recomputed."""
    top = {v: k for k, v in _DIT_TOP.items()}
    block = {v: k for k, v in _DIT_BLOCK.items()}
    embed = {v: k for k, v in _DIT_EMBED.items()}
    out, copies, qkv = {}, {}, {}
    for key, v in state_dict.items():
        module, param = key.rsplit(".", 1)
        if module in top:
            out[f"{top[module]}.{param}"] = v
            continue
        if not module.startswith("transformer_blocks."):
            raise InputError(f"not a diffusers DiT key: {key!r}")
        _, i, rest = module.split(".", 2)
        if rest in embed:
            copies.setdefault(f"{embed[rest]}.{param}", []).append(v)
        elif rest.startswith("attn1.to_") and rest[6:] in _QKV:
            qkv.setdefault(f"blocks.{i}.attn.qkv.{param}", {})[rest[6:]] = v
        elif rest in block:
            out[f"blocks.{i}.{block[rest]}.{param}"] = v
        else:
            raise InputError(f"not a diffusers DiT key: {key!r}")
    for key, vs in copies.items():
        if any(not torch.equal(vs[0], v) for v in vs[1:]):
            raise InputError(f"the per-block copies of {key} differ: a latentae DiT shares "
                             "one timestep/class embedder across blocks")
        out[key] = vs[0]
    for key, parts in qkv.items():
        out[key] = torch.cat([parts[n] for n in _QKV], dim=0)
    grid = config.input_size // config.patch_size
    out["pos_embed"] = sincos_pos_embed_2d(config.hidden_size, grid)[None]
    return out


def to_diffusers(model: DiT, release_timesteps: bool = True):
    """A ``diffusers.DiTTransformer2DModel`` with ``model``'s weights. With
    ``release_timesteps`` each block's ``time_proj`` uses the DiT release's frequencies,
    so its outputs equal ``model``'s; saved and reloaded, diffusers resets it to its own."""
    from diffusers import DiTTransformer2DModel  # deferred: heavy optional dependency

    out = DiTTransformer2DModel(**diffusers_dit_config(model.config))
    out.load_state_dict(dit_to_diffusers(model.state_dict(), model.config.depth), strict=True)
    if release_timesteps:
        for block in out.transformer_blocks:
            block.norm1.emb.time_proj.downscale_freq_shift = 0
    return out


def from_diffusers(dmodel) -> DiT:
    """A latentae DiT from a ``diffusers.DiTTransformer2DModel`` (its config and weights)."""
    cfg = dmodel.config
    out = cfg.out_channels or cfg.in_channels
    if out not in (cfg.in_channels, 2 * cfg.in_channels):
        raise InputError(f"diffusers DiT with {out} output channels for {cfg.in_channels} "
                         "inputs: expected C or 2·C")
    config = DiTConfig(input_size=cfg.sample_size, patch_size=cfg.patch_size,
                       in_channels=cfg.in_channels, depth=cfg.num_layers,
                       hidden_size=cfg.num_attention_heads * cfg.attention_head_dim,
                       num_heads=cfg.num_attention_heads, num_classes=cfg.num_embeds_ada_norm,
                       learn_sigma=out == 2 * cfg.in_channels)
    model = DiT(config)
    load_state_dict_strict(model, dit_from_diffusers(dmodel.state_dict(), config),
                           source="the diffusers DiT")
    return model


# Prefixes the releases put on every key: DDP's ``module.``, efficientvit's training
# checkpoints ``{"ema": {name: {"uvit.<key>" | "dit.<key>": ...}}}`` and its Hugging Face
# files (``DCAE_Diffusion_HF``: ``diffusion_model.<key>``).
PREFIXES = ("module.", "diffusion_model.", "uvit.", "dit.")


def unwrap_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """The weights of a checkpoint: a plain state dict, or one under ``ema`` (preferred)
    or ``model``, or DC-AE's ``{"ema": {name: state_dict}}`` (its first entry, as the
    release loads it); a prefix of :data:`PREFIXES` on every key is removed."""
    if not isinstance(obj, Mapping):
        raise InputError(f"expected a state dict (a mapping of names to tensors); got "
                         f"{type(obj).__name__}")
    for key in ("ema", "model"):
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if obj and all(isinstance(v, Mapping) for v in obj.values()):
        obj = next(iter(obj.values()))
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not obj or bad:
        raise InputError(f"not a state dict of tensors (non-tensor entries: {bad[:5]}); "
                         "expected the weights, or a checkpoint with them under "
                         "'model' or 'ema'")
    sd = dict(obj)
    for prefix in PREFIXES:
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _shape(sd: dict, key: str, what: str) -> tuple[int, ...]:
    if key not in sd:
        raise InputError(f"the checkpoint has no {key!r}: not a {what} state dict "
                         f"(its first keys: {sorted(sd)[:5]})")
    return tuple(sd[key].shape)


def _count(sd: dict, prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)})


def _official_overrides(sd: dict, family: str, patch_size: int, in_channels: int) -> dict:
    """Config fields only the weights know: learned sigma, MLP ratio, U-ViT's options."""
    what = {"dit": "DiT", "uvit": "U-ViT"}[family]
    embed, fc1, head = (("x_embedder.proj.weight", "blocks.0.mlp.fc1.weight",
                         "final_layer.linear.weight") if family == "dit" else
                        ("patch_embed.proj.weight", "in_blocks.0.mlp.fc1.weight",
                         "decoder_pred.weight"))
    width, c, p, _ = _shape(sd, embed, what)
    if (c, p) != (in_channels, patch_size):
        raise InputError(f"the checkpoint's patch embedding takes {c} channels in {p}x{p} "
                         f"patches; asked for {in_channels} channels, patch {patch_size}")
    outputs = _shape(sd, head, what)[0] // (p * p)
    if outputs not in (c, 2 * c):
        raise InputError(f"the checkpoint predicts {outputs} channels per pixel for {c} "
                         "input channels (expected C or 2·C)")
    fields = {"learn_sigma": outputs == 2 * c, "mlp_ratio": _shape(sd, fc1, what)[0] / width}
    ada = sd.get("blocks.0.adaLN_modulation.1.weight")
    if family == "dit" and ada is not None and ada.shape[0] != 6 * width:
        raise InputError(f"the checkpoint's DiT blocks regress {ada.shape[0] // width}·D "
                         "modulation values, not 6·D: a post-norm DiT (efficientvit "
                         "post_norm=True) is not supported, only the release's adaLN-Zero")
    if family == "uvit":
        fields.update(mlp_time_embed="time_embed.0.weight" in sd,
                      qkv_bias="in_blocks.0.attn.qkv.bias" in sd,
                      final_conv="final_layer.weight" in sd)
    return fields


def _null_class(sd: dict, key: str, num_classes: int, family: str) -> bool:
    """Whether the label table ends with a null class: ``num_classes + 1`` rows (the
    releases with label dropout); ``num_classes`` rows (trained without it: no guidance);
    none (unconditional: efficientvit's DiT ``unconditional=True``, a U-ViT with 0 classes;
    a latentae unconditional DiT keeps one null row)."""
    rows = sd[key].shape[0] if key in sd else 0
    if num_classes == 0 and rows in (0, 1):
        return rows == 1 or family == "uvit"
    if num_classes and rows in (num_classes, num_classes + 1):
        return rows == num_classes + 1
    hint = ("--num-classes 0 (unconditional)" if rows == 0 else
            f"--num-classes {rows - 1} (a null row last) or {rows} (no null row)")
    raise InputError(f"the checkpoint's label table has {rows} rows, which does not fit "
                     f"{num_classes} classes (expected {num_classes + 1} with the null class "
                     f"of guidance, or {num_classes} without): pass {hint}")


def _check_input_size(sd: dict, family: str, input_size: int, patch_size: int,
                      label_key: str) -> None:
    """``input_size`` against the checkpoint's position embedding, before the model is
    built: its table for ``--input-size 1000000`` would need 128 TB (sweep DC05)."""
    if input_size < 1 or input_size % patch_size:
        raise InputError(f"--input-size {input_size} is not a positive multiple of the "
                         f"patch size {patch_size}")
    if "pos_embed" not in sd:
        return
    extras = 0 if family == "dit" else 1 + (label_key in sd)  # U-ViT: time (+ label) token
    tokens = sd["pos_embed"].shape[-2] - extras
    if (input_size // patch_size) ** 2 != tokens:
        grid = math.isqrt(max(tokens, 0))
        hint = f": pass --input-size {grid * patch_size}" if grid * grid == tokens else ""
        raise InputError(f"--input-size {input_size} does not fit the checkpoint: its "
                         f"position embedding holds {tokens} patch tokens, the latent size "
                         f"it was trained on{hint}")


def load_official(state_dict: Any, name: str, patch_size: int, input_size: int,
                  in_channels: int, num_classes: int, **overrides: Any) -> DiffusionModel:
    """A latentae model from weights in the official DiT or U-ViT/DC-AE release layout
    (see the module docstring); ``name`` is a latentae preset (``dit-xl``, ``uvit-h``…)
    whose width and depth (after ``overrides`` of config fields) must match the weights.
    Raises ``InputError`` naming what differs."""
    family, arch = get_preset(name)
    arch = {**arch, **overrides}
    sd = unwrap_state_dict(state_dict)
    if family == "uvit" and "label_emb.weight" in sd:  # U-ViT release: a plain nn.Embedding
        sd["label_emb.embedding_table.weight"] = sd.pop("label_emb.weight")
    label_key = ("y_embedder" if family == "dit" else "label_emb") + ".embedding_table.weight"
    from_weights = _official_overrides(sd, family, patch_size, in_channels)
    from_weights["null_class"] = _null_class(sd, label_key, num_classes, family)
    width = _shape(sd, "x_embedder.proj.weight" if family == "dit"
                   else "patch_embed.proj.weight", family)[0]
    depth = (_count(sd, "blocks.") if family == "dit"
             else _count(sd, "in_blocks.") + _count(sd, "out_blocks."))
    if (width, depth) != (arch["hidden_size"], arch["depth"]):
        raise InputError(f"the checkpoint has width {width} and depth {depth}; preset {name} "
                         f"has {arch['hidden_size']} and {arch['depth']}: choose the matching "
                         "--model")
    _check_input_size(sd, family, input_size, patch_size, label_key)
    config = preset_config(name, patch_size=patch_size, in_channels=in_channels,
                           input_size=input_size, num_classes=num_classes,
                           **{**overrides, **from_weights})
    model = build(family, config, preset=name)
    try:
        load_state_dict_strict(model, sd, source=f"the {name} checkpoint")
    except ValueError as e:
        raise InputError(f"{e}\n(is --input-size {input_size} the latent size it was "
                         "trained on? the position embedding fixes it)") from e
    return model.eval()  # sampling mode (no label dropout), as diffusers loads
