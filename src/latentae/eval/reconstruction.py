"""The evaluation loop behind ``latentae eval``: reconstruct a folder of images through
the inference runtime (``latentae/runtime.py``) and measure PSNR, SSIM, LPIPS, rFID and
latent statistics under the protocol of ``docs/evaluation.md`` (recorded in every
report by ``eval/report.py``)."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from latentae import progress
from latentae.errors import InputError
from latentae.eval.diffusability import MAX_CODES, DiffusabilityStats
from latentae.eval.fid import FeatureStats, fid_from_stats, resize_for_inception
from latentae.eval.inception import load_inception
from latentae.eval.lpips import load_lpips
from latentae.eval.mmd import LatentStats, mmd2_to_normal
from latentae.eval.psnr_ssim import mean_finite, psnr_per_image, ssim_per_image
from latentae.io import CorruptImageError, ImageFolderDataset, image_grid, to_tensor, to_uint8
from latentae.models.distributions import DeterministicPosterior
from latentae.runtime import DTYPES, ModelRunner


@dataclass(frozen=True)
class EvalConfig:
    """How images are prepared and reconstructed (recorded in every report)."""

    resolution: int = 256
    crop: str = "center"          # "center" | "random" (after a shortest-side resize)
    batch_size: int = 4
    limit: int | None = None      # first N images (sorted by path)
    dtype: str = "float32"        # autocast dtype of the model; metrics always in float32
    fid_protocol: str = "tf1"     # "tf1" | "pytorch-fid"
    grid_images: int = 4          # rows of the recon grid
    error_gain: float = 4.0       # |x − x̂| is multiplied by this in the grid
    progress: bool = True
    pad: bool = False             # reflect-pad to a multiple of f, crop back (--pad)
    tile: int | None = None       # tiled encode/decode above this size (pixels)
    overlap: int = 64             # tile overlap (pixels)
    max_batch: int | None = None  # images/tiles per forward pass at most
    compile: str | None = None    # torch.compile backend of the encoder and decoder
    diffusability: bool = True    # latent spectrum, equivariance, whole-code MMD (--no-...)
    mmd_codes: int = MAX_CODES    # whole codes kept for the table-6 MMD at most
    keep_data: bool = False       # keep latents + real Inception features (diffusion proxy)


@dataclass
class EvalResult:
    summary: dict                 # aggregate metrics
    rows: list[dict]              # per image: file, psnr, ssim, lpips
    latents: dict                 # latent statistics
    corrupt: list[str]
    seconds: dict[str, float]     # wall time per stage, all images together
    grid: Image.Image | None
    notes: list[str] = field(default_factory=list)
    diffusability: dict | None = None  # eval.diffusability report (cfg.diffusability)
    kept: KeptData | None = None       # cfg.keep_data


@dataclass
class KeptData:
    """The pass's latents and real-image features, for work after it (``latentae eval
    --diffusion-proxy`` trains on the latents and measures against the features)."""

    latents: list[torch.Tensor] = field(default_factory=list)   # raw modes (B, C, h, w), CPU
    features: list[torch.Tensor] = field(default_factory=list)  # Inception pool3 (B, 2048)
    real: FeatureStats | None = None                            # their moments (rFID's)


@contextlib.contextmanager
def tf32_disabled() -> Iterator[None]:
    """TF32 off while metrics run (``docs/evaluation.md``); previous settings restored."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def iter_batches(ds: ImageFolderDataset, batch_size: int,
                 corrupt: list[str]) -> Iterator[tuple[torch.Tensor, list[str]]]:
    """Batches ``(B, 3, R, R)`` of readable images with their paths; corrupt files are
    appended to ``corrupt`` and skipped (counted, not fatal)."""
    xs, names = [], []
    for i, path in enumerate(ds.files):
        try:
            xs.append(to_tensor(ds.load(i)))
            names.append(str(path))
        except CorruptImageError:
            corrupt.append(str(path))
        if len(xs) == batch_size:
            yield torch.stack(xs), names
            xs, names = [], []
    if xs:
        yield torch.stack(xs), names


class Timer:
    """Accumulates wall time per named stage (synchronizing CUDA for honest numbers)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.seconds = device, {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t


ERROR_COLOURS = "inferno"  # matplotlib colour map of the error image (black: no error)


def _error_image(x: torch.Tensor, r: torch.Tensor, gain: float) -> torch.Tensor:
    """``gain·|x − x̂|`` on the uint8 scale, the mean over RGB, in :data:`ERROR_COLOURS`
    (``255/gain`` levels and more: the top colour): a uint8 ``(3, H, W)`` image. The
    report draws the colour bar (``eval/report.py``: :func:`error_colours`)."""
    e = (to_uint8(x).float() - to_uint8(r).float()).abs().mean(0) * gain / 255  # (H, W)
    return error_colours(e.clamp(0, 1))


def error_colours(v: torch.Tensor) -> torch.Tensor:
    """Values in [0, 1] ``(H, W)`` -> :data:`ERROR_COLOURS` as uint8 ``(3, H, W)``."""
    from matplotlib import colormaps  # deferred: heavy, only for the grid
    rgb = colormaps[ERROR_COLOURS](v.float().numpy())[..., :3]  # (H, W, 3) in [0, 1]
    return torch.from_numpy(rgb * 255).round().to(torch.uint8).permute(2, 0, 1)


def _check(model: torch.nn.Module, cfg: EvalConfig) -> None:
    f = model.spatial_compression_ratio
    if cfg.resolution % f and not cfg.pad:
        raise InputError(f"--resolution {cfg.resolution} is not divisible by the model's "
                         f"spatial compression ratio {f}: use a multiple of {f}, or pass "
                         "--pad to reflect-pad the images and crop the reconstructions back")
    if cfg.dtype not in DTYPES:
        raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {cfg.dtype!r}")


@dataclass
class _Pass:
    """The accumulators of one pass over the data."""

    timer: Timer
    lat: LatentStats
    div: DiffusabilityStats | None
    kept: KeptData | None
    real: FeatureStats = field(default_factory=FeatureStats)
    fake: FeatureStats = field(default_factory=FeatureStats)
    rows: list[dict] = field(default_factory=list)
    grid_rows: list[list[torch.Tensor]] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    deterministic: bool = False


def _measure(x: torch.Tensor, r: torch.Tensor, nets: tuple, cfg: EvalConfig,
             acc: _Pass) -> list[torch.Tensor]:
    """PSNR, SSIM, LPIPS per image ``(B,)`` each; Inception features into the stats (and
    the real ones into ``acc.kept``)."""
    lpips_net, inception = nets
    timer = acc.timer
    with timer("psnr"):
        p = psnr_per_image(x, r)
    with timer("ssim"):
        s = ssim_per_image(x, r)
    with timer("lpips"):
        q = to_uint8  # LPIPS sees the quantized images too, back in [-1, 1]
        d = lpips_net(q(x).float() / 127.5 - 1, q(r).float() / 127.5 - 1).cpu()
    with timer("inception"):
        features = inception(resize_for_inception(x, cfg.fid_protocol))  # (B, 2048)
        acc.real.update(features)
        acc.fake.update(inception(resize_for_inception(r, cfg.fid_protocol)))
        if acc.kept is not None:
            acc.kept.features.append(features.float().cpu())
    return [p, s, d]


def _step(x: torch.Tensor, names: list[str], runner: ModelRunner, nets: tuple,
          cfg: EvalConfig, acc: _Pass) -> None:
    """One batch: reconstruct (posterior mode), latent statistics and diagnostics from
    the same latents, the metrics, the grid rows."""
    timer = acc.timer
    with timer("model"):
        posterior = runner.encode_posterior(x)
        z = posterior.mode().float()  # (B, nz, h, w)
        r = runner.decode(z, size=tuple(x.shape[-2:]))
    acc.deterministic = isinstance(posterior, DeterministicPosterior)
    with timer("latent stats"):
        acc.lat.update(z)
    if acc.div is not None:
        with timer("diffusability"):  # spectra, codes, decodes of the pooled latents
            acc.div.update(x, z, runner.decode, recon=r)
    if acc.kept is not None:
        acc.kept.latents.append(z.cpu())
    p, s, d = _measure(x, r, nets, cfg, acc)
    acc.rows += [{"file": n, "psnr": float(a), "ssim": float(b), "lpips": float(c)}
                 for n, a, b, c in zip(names, p, s, d)]
    acc.grid_rows += [[xi.cpu(), ri.cpu(), _error_image(xi, ri, cfg.error_gain).cpu()]
                      for xi, ri in zip(x, r)][: cfg.grid_images - len(acc.grid_rows)]


def evaluate_reconstruction(model: torch.nn.Module, data: str | Path, cfg: EvalConfig,
                            device: torch.device, lpips_net=None, inception=None
                            ) -> EvalResult:
    """Reconstruct every image of ``data`` with ``model`` (posterior mode) and measure it;
    the diffusability diagnostics from the same latents (``cfg.diffusability``)."""
    _check(model, cfg)
    ds = ImageFolderDataset(data, cfg.resolution, crop=cfg.crop)
    ds.files = ds.files[: cfg.limit] if cfg.limit else ds.files
    nets = (lpips_net or load_lpips("alex", device), inception or load_inception(device))
    runner = ModelRunner(model, device, cfg.dtype, tile=cfg.tile, overlap=cfg.overlap,
                         max_batch=cfg.max_batch, pad=cfg.pad, compile=cfg.compile)
    div = (DiffusabilityStats(model.scaling_factor, model.shift_factor,
                              max_codes=cfg.mmd_codes) if cfg.diffusability else None)
    acc = _Pass(Timer(device), LatentStats(model.latent_channels), div,
                KeptData() if cfg.keep_data else None)
    batches = iter_batches(ds, cfg.batch_size, acc.corrupt)
    if cfg.progress:
        batches = progress.bar(batches, total=math.ceil(len(ds) / cfg.batch_size),
                               unit="batch", desc="eval")
    with torch.no_grad(), tf32_disabled():
        for x, names in batches:
            _step(x.to(device), names, runner, nets, cfg, acc)
    factors = (float(model.scaling_factor), float(model.shift_factor or 0.0))
    result = _finish(acc, ds, factors)
    if div is not None:
        with acc.timer("mmd whole-code"):
            result.diffusability = div.report(per_position=False, device=device)
    if acc.kept is not None:
        acc.kept.real = acc.real
        result.kept = acc.kept
    return result


def _finish(acc: _Pass, ds: ImageFolderDataset, factors: tuple[float, float]) -> EvalResult:
    rows, real, corrupt, timer = acc.rows, acc.real, acc.corrupt, acc.timer
    if not rows:
        raise InputError(f"none of the {len(ds.files)} image(s) in {ds.folder} could be "
                         f"decoded ({len(corrupt)} corrupt)")
    notes = []
    summary = {"psnr": mean_finite(torch.tensor([r["psnr"] for r in rows])),
               "ssim": float(sum(r["ssim"] for r in rows) / len(rows)),
               "lpips": float(sum(r["lpips"] for r in rows) / len(rows)),
               "rfid": None, "mmd2_scaled": None, "mmd2_standardized": None}
    with timer("fid"):
        if real.n >= 2:
            summary["rfid"] = fid_from_stats(real, acc.fake, warn=False)
        else:
            notes.append("rFID needs at least 2 images; not computed")
    if 2 <= real.n < 2048:
        notes.append(f"rFID from {real.n} images (< 2048): biased upwards, not comparable "
                     "with published numbers")
    # The factors latent-stats would suggest (scaling.suggest_factors): shift where the
    # model's config has one, 1/RMS for a plain autoencoder, else 1/std.
    latents = acc.lat.summary(acc.deterministic, use_shift=factors[1] != 0.0)
    with timer("mmd"):
        v = acc.lat.vectors()
        if v.shape[0] >= 2:  # as the diffusion model sees them, and standardized
            scale, shift = factors
            summary["mmd2_scaled"] = mmd2_to_normal((v - shift) * scale)
            summary["mmd2_standardized"] = mmd2_to_normal(
                (v - latents["mean"]) / max(latents["std"], 1e-12))
            latents["mmd_vectors"] = v.shape[0]
            latents["model_scaling_factor"], latents["model_shift_factor"] = scale, shift
    if corrupt:
        notes.append(f"{len(corrupt)} corrupt image(s) skipped: " + ", ".join(corrupt[:5]))
    grid = image_grid(acc.grid_rows) if acc.grid_rows else None
    return EvalResult(summary, rows, latents, corrupt, timer.seconds, grid, notes)
