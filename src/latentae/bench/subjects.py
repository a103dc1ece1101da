"""What the bench measures: a uniform view of latentae models and their diffusers twins.

A :class:`Subject` exposes ``encode(images) -> latents`` (the posterior mode) and
``decode(latents) -> images`` plus encoder/decoder parameter counts, so one timing loop
serves latentae ``SDVAE``/``LiteVAE``/``DCAE`` and diffusers ``AutoencoderKL``/
``AutoencoderDC``. Twins are built through the converters (``convert.export_diffusers``
then diffusers ``from_pretrained`` on the local directory), so they hold the same weights.
An ``onnxruntime:`` column runs a model's two ONNX graphs (``convert/onnx.py``) with
onnxruntime's CPU provider (inference only).
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from latentae.convert.onnx import (
    DECODER_FILE,
    ENCODER_FILE,
    export_graph,
    inference_session,
    require_onnx,
    run_session,
)
from latentae.errors import InputError
from latentae.models.autoencoder import Autoencoder
from latentae.pretrained import save_pretrained
from latentae.registry import parameter_counts

TWIN_FAMILIES = {"sdvae": "AutoencoderKL", "dcae": "AutoencoderDC"}


@dataclass
class Subject:
    """One column of the bench table."""

    name: str
    module: nn.Module
    encoder_params: int
    decoder_params: int
    encode: Callable[[torch.Tensor], torch.Tensor]  # (B, 3, H, W) -> (B, nz, H/f, W/f)
    decode: Callable[[torch.Tensor], torch.Tensor]  # (B, nz, h, w) -> (B, 3, h·f, w·f)
    latent_channels: int
    compression: int
    kind: str  # "latentae", "diffusers" or "onnxruntime"
    twin_of: str | None = None
    dtype: str = "float32"  # autocast dtype this column runs in
    process: str = "same"  # "same", or "default": timed in a fresh child process
    trainable: bool = True  # False: the inference modes only (onnxruntime)


def _count(params) -> int:
    return sum(p.numel() for p in params)


def latentae_subject(model: Autoencoder, name: str) -> Subject:
    """A latentae model as a bench subject (encode returns the posterior mode)."""
    counts = parameter_counts(model)
    return Subject(name=name, module=model, encoder_params=counts["encoder"],
                   decoder_params=counts["decoder"],
                   encode=lambda x: model.encode(x).mode(), decode=model.decode,
                   latent_channels=model.latent_channels,
                   compression=model.spatial_compression_ratio, kind="latentae")


def diffusers_twin(model: Autoencoder) -> nn.Module:
    """The diffusers ``AutoencoderKL``/``AutoencoderDC`` holding ``model``'s weights."""
    if model.family not in TWIN_FAMILIES:
        raise InputError(f"{model.preset or model.family} ({model.family}) has no diffusers "
                         f"twin; --compare diffusers needs one of {sorted(TWIN_FAMILIES)}")
    try:
        import diffusers  # deferred: a heavy optional dependency, only for --compare
    except ImportError as e:
        raise InputError("--compare diffusers needs `pip install diffusers`") from e

    cls = getattr(diffusers, TWIN_FAMILIES[model.family])
    with tempfile.TemporaryDirectory(prefix="latentae-twin-") as tmp:
        save_pretrained(model, tmp, format="diffusers")
        twin = cls.from_pretrained(tmp, local_files_only=True, low_cpu_mem_usage=False)
    return twin.eval()


def diffusers_subject(vae: nn.Module, name: str, twin_of: str | None = None,
                      process: str = "same") -> Subject:
    """A diffusers autoencoder as a bench subject (``process="default"``: timed in a child
    process with PyTorch's defaults, see ``bench/isolated.py``)."""
    enc = [*vae.encoder.parameters()]
    dec = [*vae.decoder.parameters()]
    for attr, group in (("quant_conv", enc), ("post_quant_conv", dec)):
        layer = getattr(vae, attr, None)
        if isinstance(layer, nn.Module):
            group += list(layer.parameters())

    def encode(x: torch.Tensor) -> torch.Tensor:
        out = vae.encode(x)
        return out.latent_dist.mode() if hasattr(out, "latent_dist") else out.latent

    cfg = vae.config
    nz = cfg.latent_channels
    if hasattr(cfg, "block_out_channels"):
        f = 2 ** (len(cfg.block_out_channels) - 1)
    else:
        f = 2 ** (len(cfg.encoder_block_out_channels) - 1)
    return Subject(name=name, module=vae, encoder_params=_count(enc), decoder_params=_count(dec),
                   encode=encode, decode=lambda z: vae.decode(z).sample, latent_channels=nz,
                   compression=f, kind="diffusers", twin_of=twin_of, process=process)


def onnxruntime_subject(model: Autoencoder, name: str, threads: int | None = None) -> Subject:
    """``model``'s encoder and decoder exported to ONNX and run by onnxruntime's CPU
    provider with ``threads`` intra-op threads (default: torch's), as the column
    ``onnxruntime:NAME``: float32, inference only; its module is ``model`` itself, so
    parameters and FLOPs are the model's (the same graph)."""
    require_onnx("--compare onnxruntime")
    with tempfile.TemporaryDirectory(prefix="latentae-onnx-") as tmp:
        for graph, file in (("encoder", ENCODER_FILE), ("decoder", DECODER_FILE)):
            export_graph(model, graph, Path(tmp) / file)
        enc, dec = (inference_session(Path(tmp) / f, threads)
                    for f in (ENCODER_FILE, DECODER_FILE))  # both read whole here
    return dataclasses.replace(
        latentae_subject(model, name), name=f"onnxruntime:{name}", kind="onnxruntime",
        twin_of=name, trainable=False,
        encode=lambda x: torch.from_numpy(run_session(enc, x)),
        decode=lambda z: torch.from_numpy(run_session(dec, z)))


def on_meta_device(s: Subject) -> Subject:
    """A copy of ``s`` whose module lives on the meta device: shapes without data, so
    FLOPs are counted without computing anything."""
    module = copy.deepcopy(s.module).to("meta")
    if s.kind in ("latentae", "onnxruntime"):  # onnxruntime: the model's own FLOPs
        return latentae_subject(module, s.name)
    return diffusers_subject(module, s.name, s.twin_of, s.process)


def with_dtype(s: Subject, dtype: str) -> Subject:
    """The same model as another column that runs under ``dtype`` autocast
    (named ``name@dtype``)."""
    return dataclasses.replace(s, name=f"{s.name}@{dtype}", dtype=dtype,
                               twin_of=None if s.twin_of is None else f"{s.twin_of}@{dtype}")
