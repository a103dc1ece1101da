"""The one inference path: device, dtype, autocast, memory format, tiles, batch slices,
padding, threads and the CPU allocator. ``latentae eval``, ``bench``, ``encode`` /
``decode`` / ``reconstruct`` / ``latent-stats`` and training take these from here.

- **Device**: ``latentae.devices.resolve_device`` (``auto``: this process's GPU, else CPU).
- **dtype**: ``DTYPES`` names the three float types; lower precision runs by
  ``torch.autocast`` around the forward passes only (losses, KL and metrics stay in
  float32, ``docs/evaluation.md``, ``docs/training.md``); the outputs come back in
  float32 and metrics always run in float32. Training calls ``autocast(device)``: bf16
  on CUDA, off on CPU.
- **Memory format**: channels_last for latentae models whose family runs faster so
  (``channels_last_inference``: SD-VAE and LiteVAE yes, DC-AE no; ``docs/benchmarks.md``).
  ``latentae.load`` applies it (and the allocator) to the autoencoders it hands out on CPU
  (:func:`fast_path`), so a library user who calls ``.encode`` / ``.decode`` with
  ordinary NCHW tensors gets the fast path too.
- **Size policy**: an image whose sides are not multiples of the compression factor
  ``f`` is refused with a message naming ``--pad``; with ``pad`` it is reflect-padded
  to the next multiples and cropped back after decoding (``latentae.tiling``).
  ``tile`` runs images (latents) larger than ``tile`` pixels as overlapping, blended
  tiles, one tile per forward pass unless ``max_batch`` says more (``tiling.TILE_BATCH``:
  tiles bound memory by default); ``max_batch`` also caps whole images per pass.
- **Allocator**: on Linux/glibc, large freed blocks stay in the heap (``tune_allocator``).
"""

from __future__ import annotations

import contextlib
import ctypes
import platform
from contextlib import AbstractContextManager

import torch

from latentae.devices import resolve_device
from latentae.errors import InputError
from latentae.models.distributions import DeterministicPosterior, DiagonalGaussian
from latentae.tiling import TILE_BATCH, check_tiles, pad_to_multiple, tiled_decode, tiled_encode

__all__ = ["COMPILE_BACKENDS", "DTYPES", "ModelRunner", "autocast", "compile_module",
           "dtype_from_name", "fast_path", "glibc", "memory_format", "set_threads",
           "tune_allocator"]

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16,
                                  "float16": torch.float16}
_LIBC: list = []  # the loaded libc, once


def dtype_from_name(name: str | torch.dtype) -> torch.dtype:
    """``"bfloat16"`` -> ``torch.bfloat16`` (a ``torch.dtype`` passes through)."""
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise InputError(f"unknown dtype {name!r}; valid: {', '.join(DTYPES)}")
    return DTYPES[name]


def autocast(device: torch.device | str, dtype: torch.dtype | str | None = None
             ) -> AbstractContextManager:
    """The autocast context for forward passes on ``device``.

    ``dtype=None``: the training default, bfloat16 on CUDA and off on CPU (CPU runs
    train in float32);
    ``float32``: off; ``bfloat16``/``float16``: on, on any device.
    """
    device = torch.device(device)
    if dtype is None:
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    dtype = dtype_from_name(dtype)
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


# torch.compile backends a user may name: inductor (generated kernels, the fast path);
# eager (graph capture only: checks that a model compiles without generating code)
COMPILE_BACKENDS = ("inductor", "eager")


def compile_module(module, backend: str | None, in_place: bool = False):
    """``torch.compile(module, backend=backend)`` (a module or a function of modules), or
    ``module`` itself for ``None``; ``in_place``: ``module.compile(...)``, which keeps the
    module (its state_dict keys, its place in a parent) and compiles its ``forward``.
    The compiled wrapper shares the module's parameters;
    compiling happens at its first calls (a warm-up), and again for a new input shape or
    train/eval mode: shapes are static (``dynamic=False``), so a second shape gets its own
    specialised kernels rather than one dynamic-shape graph."""
    if backend is None:
        return module
    if backend not in COMPILE_BACKENDS:
        raise InputError(f"unknown compile backend {backend!r}; valid: "
                         f"{', '.join(COMPILE_BACKENDS)}")
    if in_place:
        module.compile(backend=backend, dynamic=False)
        return module
    return torch.compile(module, backend=backend, dynamic=False)


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def set_threads(threads: int | None) -> None:
    """Set torch's intra-op CPU threads (``None``: leave torch's default)."""
    if threads is not None:
        torch.set_num_threads(threads)


def glibc():
    """The process's glibc (``ctypes.CDLL``), or ``None`` where there is none."""
    if not _LIBC:
        lib = None
        if platform.system() == "Linux":
            try:
                lib = ctypes.CDLL("libc.so.6")
            except OSError:
                lib = None
        _LIBC.append(lib)
    return _LIBC[0]


def tune_allocator() -> bool:
    """Keep freed large blocks in glibc's heap instead of returning them to the OS.

    By default glibc serves every allocation above a (dynamic) threshold with a fresh
    ``mmap`` and unmaps it on free, so each large activation tensor is page-faulted and
    zeroed by the kernel again: measured 2-3× slower SiLU/GroupNorm/add on 32 MiB
    activations on CPU (``docs/benchmarks.md``). Raising the mmap and trim thresholds
    lets the heap reuse them (what jemalloc/tcmalloc do). Process-wide; returns ``False``
    where not glibc.
    """
    lib = glibc()
    if lib is None:
        return False
    try:
        ok = lib.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        ok &= lib.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
        return bool(ok)
    except AttributeError:
        return False


def fast_path(model: torch.nn.Module, device: torch.device | str) -> torch.nn.Module:
    """``model`` (in place) as it runs fastest for inference on ``device``: on CPU, an
    autoencoder's weights in channels_last where its family runs faster so
    (``channels_last_inference``; oneDNN then runs every convolution in that format, also
    for contiguous NCHW input) and glibc's allocator tuned (:func:`tune_allocator`,
    process-wide). Diffusion transformers and GPUs: unchanged (ours: channels_last
    measured no faster there). Values are unchanged."""
    if torch.device(device).type == "cpu":
        tune_allocator()
        if getattr(model, "kind", None) == "autoencoder":
            model.to(memory_format=memory_format(model.channels_last_inference))
    return model


class ModelRunner:
    """A model ready for inference: device, autocast dtype, memory format, size policy,
    tiles and batch slices. ``encode``/``decode`` take and return float32 tensors."""

    def __init__(self, model, device: str | torch.device = "auto", dtype: str = "float32",
                 channels_last: bool | None = None, tile: int | None = None, overlap: int = 64,
                 max_batch: int | None = None, pad: bool = False,
                 allocator: bool = True, compile: str | None = None) -> None:
        self.device = resolve_device(device) if isinstance(device, str) else device
        if self.device.type == "cpu" and allocator:
            tune_allocator()  # reuse freed activation memory: 2-3× faster large ops
        self.dtype = dtype_from_name(dtype)
        self.f = model.spatial_compression_ratio
        if tile is not None:
            check_tiles(self.f, tile, overlap)
        if max_batch is not None and max_batch < 1:
            raise InputError(f"max_batch (--max-batch) must be >= 1, got {max_batch}")
        self.tile, self.overlap, self.max_batch, self.pad = tile, overlap, max_batch, pad
        if channels_last is None:  # the family's faster format (DC-AE: contiguous)
            channels_last = getattr(model, "channels_last_inference", True)
        self.memory_format = memory_format(channels_last)
        self.model = model.eval().to(self.device).to(memory_format=self.memory_format)
        self.name = model.preset or model.family
        if compile is not None:  # in place: the encoder and decoder, where the time goes
            for part in (self.model.encoder, self.model.decoder):
                compile_module(part, compile, in_place=True)

    def fit(self, x: torch.Tensor, what: str = "image") -> tuple[torch.Tensor, tuple[int, int]]:
        """``(x padded to multiples of f, original (H, W))``: reflect padding with ``pad``,
        otherwise ``x`` itself when it fits, else an error that names ``--pad``."""
        h, w = x.shape[-2:]
        if self.pad:
            return pad_to_multiple(x, self.f)
        if h % self.f or w % self.f:
            ph, pw = -(-h // self.f) * self.f, -(-w // self.f) * self.f
            raise InputError(
                f"{what} is {w}x{h} (WxH), not a multiple of {self.f}, the compression "
                f"factor of {self.name}: pass --pad to reflect-pad it to {pw}x{ph} and crop "
                "the reconstruction back, or resize/crop it first")
        return x, (h, w)

    def _tiled(self, size: int) -> bool:
        return self.tile is not None and size > self.tile

    @torch.no_grad()
    def encode_posterior(self, x: torch.Tensor, what: str = "image"):
        """The posterior of images ``(B, 3, H, W)`` in [-1, 1] (padded per :meth:`fit`)."""
        x, _ = self.fit(x, what)
        x = x.to(self.device).contiguous(memory_format=self.memory_format)
        with autocast(self.device, self.dtype):
            if self._tiled(max(x.shape[-2:])):
                return tiled_encode(self.model, x, self.tile, self.overlap,
                                    self.max_batch or TILE_BATCH)
            if self.max_batch is None or len(x) <= self.max_batch:
                return self.model.encode(x)
            return _concat_posteriors([self.model.encode(p) for p in x.split(self.max_batch)])

    def encode(self, x: torch.Tensor, sample: bool = False,
               generator: torch.Generator | None = None, what: str = "image") -> torch.Tensor:
        """Images ``(B, 3, H, W)`` -> latents ``(B, nz, ⌈H/f⌉, ⌈W/f⌉)`` in float32 (the
        posterior mode, or a sample)."""
        post = self.encode_posterior(x, what)
        return (post.sample(generator) if sample else post.mode()).float()

    @torch.no_grad()
    def decode(self, z: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Latents ``(B, nz, h, w)`` -> images ``(B, 3, h·f, w·f)`` in float32, cropped to
        ``size = (H, W)`` when given (undoing ``pad``)."""
        z = z.to(self.device).contiguous(memory_format=self.memory_format)
        with autocast(self.device, self.dtype):
            if self._tiled(max(z.shape[-2:]) * self.f):
                out = tiled_decode(self.model, z, self.tile, self.overlap,
                                   self.max_batch or TILE_BATCH)
            else:
                out = torch.cat([self.model.decode(p)
                                 for p in z.split(self.max_batch or len(z))])
        out = out.float()
        return out if size is None else out[..., :size[0], :size[1]]

    def reconstruct(self, x: torch.Tensor, what: str = "image") -> torch.Tensor:
        """``decode(encode(x))`` (posterior mode) at ``x``'s own size."""
        return self.decode(self.encode(x, what=what), size=tuple(x.shape[-2:]))


def _concat_posteriors(posts: list) -> DiagonalGaussian | DeterministicPosterior:
    """One posterior from the posteriors of consecutive batch slices."""
    if isinstance(posts[0], DiagonalGaussian):
        return DiagonalGaussian(torch.cat([torch.cat([p.mean, p.logvar], dim=1)
                                           for p in posts]))  # (B, 2nz, h, w) moments
    return DeterministicPosterior(torch.cat([p.mean for p in posts]))
