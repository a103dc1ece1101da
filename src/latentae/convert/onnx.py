"""ONNX export of a latentae autoencoder as two graphs, checked with onnxruntime.

``export_onnx(model, folder)`` (``latentae export MODEL --format onnx OUT``) writes

- ``encoder.onnx``: ``images`` ``(B, 3, H, W)`` float32 in [-1, 1] -> ``latents``
  ``(B, nz, H/f, W/f)``: the posterior mean (LiteVAE, SD-VAE: ``encode(x).mode()``) or
  DC-AE's latent, **unscaled** (a diffusion model takes ``(z - shift_factor) ·
  scaling_factor``; both factors are in the files' metadata);
- ``decoder.onnx``: ``latents`` ``(B, nz, h, w)`` -> ``images`` ``(B, 3, h·f, w·f)``
  (about [-1, 1], not clamped), exactly what ``decode`` returns.

Batch, height and width are dynamic in both graphs; H and W must be multiples of the
compression factor ``f`` (as for ``encode``). Every family exports so: LiteVAE's Haar
DWT is a fixed stride-2 convolution, the UNets preserve resolution, DC-AE's space-to-
channel shortcuts and linear attention and SD-VAE's mid attention are shape-generic.
Each graph is run through onnxruntime against PyTorch at the traced shape and at another
batch and size before the folder counts as written (``check_parity``).

Exporter: ``torch.onnx.export(..., dynamo=True)`` (``torch.export`` + onnxscript). The
legacy TorchScript exporter (``dynamo=False``, a DeprecationWarning) was tried on torch
2.13 with dynamic axes: it fails on LiteVAE's encoder ("convolution for kernel of
unknown shape", the Haar weight) and its DC-AE decoder graph differs from PyTorch by
0.34 (max abs) at the very shape it traced (``docs/deployment.md``). Graphs over 2 GB
(``dcae-f128c512``'s decoder) keep their weights beside them in ``NAME.onnx.data``
(protobuf's limit). The graphs do not check that H and W are multiples of ``f``.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import nn

from latentae.errors import InputError, LatentaeError
from latentae.models.autoencoder import Autoencoder
from latentae.version import __version__

ENCODER_FILE, DECODER_FILE = "encoder.onnx", "decoder.onnx"
TOLERANCE = 1e-4  # max |onnxruntime - torch| in float32, × max(1, max |torch output|)
INSTALL_HINT = "pip install latentae[onnx]"


def require_onnx(what: str = "ONNX export") -> ModuleType:
    """``onnxruntime`` once ``onnx``, ``onnxscript`` (torch's exporter) and it import;
    else an ``InputError`` naming the install command."""
    try:
        import onnx  # noqa: F401  deferred: a heavy optional dependency
        import onnxruntime  # deferred: a heavy optional dependency
        import onnxscript  # noqa: F401  deferred: a heavy optional dependency
    except ImportError as e:
        raise InputError(f"{what} needs onnx, onnxscript and onnxruntime "
                         f"({e.name or e} is missing): {INSTALL_HINT}") from e
    return onnxruntime


class EncoderGraph(nn.Module):
    """``images (B, 3, H, W)`` in [-1, 1] -> unscaled ``latents (B, nz, H/f, W/f)``:
    the posterior's mode (the Gaussian mean; DC-AE's latent)."""

    def __init__(self, model: Autoencoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode(images).mode()


class DecoderGraph(nn.Module):
    """``latents (B, nz, h, w)`` -> ``images (B, 3, h·f, w·f)``, as ``model.decode``."""

    def __init__(self, model: Autoencoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.model.decode(latents)


def latent_shapes(model: Autoencoder) -> list[tuple[int, int, int]]:
    """``(batch, h, w)`` of the traced example and of the second checked shape: batch
    2, not square, not 1 (``torch.export`` specialises sizes 0 and 1), images at least
    64² or 3 latents a side; then batch 1 and other sides (the axes really are dynamic)."""
    h = max(64 // model.spatial_compression_ratio, 3)
    return [(2, h, h + 1), (1, h + 2, h + 3)]


def example_inputs(model: Autoencoder, batch: int, h: int, w: int,
                   seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded ``images`` ``(batch, 3, h·f, w·f)`` in [-1, 1] and ``latents``
    ``(batch, nz, h, w)`` (standard normal) for tracing and checking."""
    g = torch.Generator().manual_seed(seed)
    f = model.spatial_compression_ratio
    return {"images": torch.rand(batch, 3, h * f, w * f, generator=g) * 2 - 1,
            "latents": torch.randn(batch, model.latent_channels, h, w, generator=g)}


def _dynamic_shapes(name: str, f: int) -> dict:
    dim = torch.export.Dim
    scale = f if name == "images" else 1  # image sides are multiples of f
    return {name: {0: dim("batch"), 2: scale * dim("latent_height", min=1),
                   3: scale * dim("latent_width", min=1)}}


def _metadata(model: Autoencoder, graph: str) -> dict[str, str]:
    return {"latentae.version": __version__, "latentae.graph": graph,
            "latentae.family": model.family, "latentae.preset": str(model.preset),
            "latentae.latent_channels": str(model.latent_channels),
            "latentae.spatial_compression_ratio": str(model.spatial_compression_ratio),
            "latentae.scaling_factor": repr(float(model.scaling_factor)),
            "latentae.shift_factor": repr(float(model.shift_factor)),
            "latentae.latents": "unscaled posterior mode (Gaussian mean / DC-AE latent)"}


def export_graph(model: Autoencoder, graph: str, path: str | os.PathLike) -> None:
    """Trace ``graph`` ("encoder" or "decoder") of ``model`` with dynamic batch and size
    and write it to ``path`` (weights inside the file below 2 GB, else in
    ``path.data``)."""
    require_onnx()
    module = EncoderGraph(model) if graph == "encoder" else DecoderGraph(model)
    name, out_name = ("images", "latents") if graph == "encoder" else ("latents", "images")
    example = example_inputs(model, *latent_shapes(model)[0])[name]
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)  # "torchvision is not installed" x4, irrelevant
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # exporter deprecation chatter, not ours
            program = torch.onnx.export(
                module, (example,), None, dynamo=True, verbose=False, optimize=True,
                input_names=[name], output_names=[out_name],
                dynamic_shapes=_dynamic_shapes(name, model.spatial_compression_ratio))
    except Exception as e:  # torch.export's errors have many types; say which graph
        raise LatentaeError(f"ONNX export of the {graph} of {model.preset or model.family} "
                            f"failed: {type(e).__name__}: {str(e).splitlines()[0]}") from e
    finally:
        registration.setLevel(level)
    program.model.metadata_props.update(_metadata(model, graph))
    if graph == "encoder":  # the exporter names them s38, s97: say what they are
        import onnx_ir  # deferred: a heavy optional dependency (comes with onnxscript)

        program.model.graph.outputs[0].shape = onnx_ir.Shape(
            ["batch", model.latent_channels, "latent_height", "latent_width"])
    program.save(str(path), external_data=None)  # None: inside the file when it fits


def inference_session(path: str | os.PathLike, threads: int | None = None):
    """An onnxruntime ``InferenceSession`` on the CPU provider with ``threads``
    intra-op threads (default: torch's thread count, so the two compare like for like)."""
    ort = require_onnx("onnxruntime inference")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_session(session, array: torch.Tensor | np.ndarray) -> np.ndarray:
    """The one output of a one-input ``session`` on ``array`` (float32, C-contiguous)."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(array, dtype=np.float32)}
    return session.run(None, feed)[0]


def check_parity(model: Autoencoder, folder: str | os.PathLike,
                 threads: int | None = None) -> dict[str, list[dict]]:
    """Run both graphs in ``folder`` through onnxruntime and ``model`` in PyTorch at the
    shapes of ``latent_shapes``; ``{"encoder": [{"shape", "max_abs_diff", "scale"}, ...],
    "decoder": [...]}``. Raises ``LatentaeError`` past ``TOLERANCE``."""
    out: dict[str, list[dict]] = {}
    for graph, file, name in (("encoder", ENCODER_FILE, "images"),
                              ("decoder", DECODER_FILE, "latents")):
        module = EncoderGraph(model) if graph == "encoder" else DecoderGraph(model)
        session = inference_session(Path(folder) / file, threads)
        out[graph] = []
        for i, shape in enumerate(latent_shapes(model)):
            x = example_inputs(model, *shape, seed=i + 1)[name]
            with torch.no_grad():
                ref = module(x).float().numpy()
            got = run_session(session, x)
            if got.shape != ref.shape:
                raise LatentaeError(f"ONNX {graph}: output {got.shape} for input "
                                    f"{tuple(x.shape)}, PyTorch gives {ref.shape}")
            err, scale = float(np.abs(got - ref).max()), max(1.0, float(np.abs(ref).max()))
            out[graph].append({"shape": list(x.shape), "max_abs_diff": err, "scale": scale})
            if not err <= TOLERANCE * scale:
                raise LatentaeError(f"ONNX {graph} differs from PyTorch by {err:.2e} (max "
                                    f"abs) on input {tuple(x.shape)}; tolerance "
                                    f"{TOLERANCE * scale:.1e}")
    return out


def export_onnx(model: Autoencoder, folder: str | os.PathLike, progress=None) -> dict:
    """Write ``folder/encoder.onnx`` and ``folder/decoder.onnx`` (the folder exists;
    callers write into a ``latentae.files.atomic_dir``), check them with onnxruntime
    (``check_parity``) and return that check's figures. ``model`` must be float32."""
    require_onnx()
    if any(p.dtype != torch.float32 or p.device.type != "cpu" for p in model.parameters()):
        raise InputError("ONNX export takes a float32 model on the CPU; call "
                         "model.float().cpu() first")
    bad = [n for n, t in model.state_dict().items()
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:  # its outputs are NaN: the parity check would blame the export
        raise InputError(f"{model.preset or model.family} has non-finite weights (NaN or "
                         f"Inf) in {len(bad)} tensor(s), e.g. {bad[0]}: the model itself "
                         "is broken; export one whose weights are finite")
    training = model.training
    model.eval()  # the graphs are inference graphs (DC-AE's BatchNorm: running statistics)
    try:
        for graph, file in (("encoder", ENCODER_FILE), ("decoder", DECODER_FILE)):
            if progress is not None:
                progress(f"onnx: exporting the {graph} of {model.preset or model.family}")
            export_graph(model, graph, Path(folder) / file)
        if progress is not None:
            progress("onnx: checking both graphs against PyTorch with onnxruntime")
        return check_parity(model, folder)
    finally:
        model.train(training)
