"""Generation metrics of a folder of samples against real images or cached statistics:
gFID, sFID, Inception Score, precision/recall, KID — behind ``latentae diffusion eval``.

One Inception pass (the FID port and protocol of ``latentae eval``: uint8 quantization,
299² TF1 bilinear or pytorch-fid resize) gives pool3 features for FID, precision/recall
and KID, sFID's spatial features (``mixed_6/conv``, first 7 channels, as ADM's
evaluator), and the 1008 logits for the Inception Score. Reference statistics are
cached as npz with their protocol (``reference_stats``, ``load_reference``; ADM reference
batches and efficientvit's statistics are read too); the formulas are in
``latentae.eval.generation_metrics``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from latentae.errors import InputError
from latentae.eval import generation_metrics as gm
from latentae.eval.fid import (
    MIN_IMAGES_WARNING,
    PROTOCOLS,
    FeatureStats,
    fid_from_stats,
    resize_for_inception,
)
from latentae.eval.generation_data import (
    ReferenceStats,
    SampleSource,
    iter_npz_images,
    iter_reference,
    iter_samples,
    load_reference,
    save_reference,
)
from latentae.eval.inception import SPATIAL_DIM, load_inception
from latentae.eval.inception import VERSION as INCEPTION_VERSION
from latentae.eval.inception_logits import HINT, find_logits_file, load_inception_with_logits
from latentae.eval.reconstruction import tf32_disabled
from latentae.progress import bar

__all__ = ["GenerationConfig", "evaluate_samples", "extract", "load_reference",
           "reference_stats"]


@dataclass(frozen=True)
class GenerationConfig:
    """Settings of the generation metrics (recorded in every result)."""

    fid_protocol: str = "tf1"              # "tf1" | "pytorch-fid" (latentae.eval.fid)
    is_splits: int = gm.IS_SPLITS
    pr_k: int = gm.PR_K
    kid_subsets: int = gm.KID_SUBSETS
    kid_subset_size: int = gm.KID_SUBSET_SIZE
    ref_max_features: int = 10_000         # real features kept in a reference npz
    seed: int = 0                          # KID subsets, the kept reference features


@dataclass
class Extracted:
    """What one Inception pass over a set of images gives."""

    stats: FeatureStats                    # streaming float64 moments, for FID
    features: torch.Tensor                 # (N, 2048) float32, CPU
    logits: torch.Tensor | None            # (N, 1008) float32, CPU, or None
    size: tuple[int, int] | None           # (H, W) of the images, None if they vary
    spatial: FeatureStats                  # moments of sFID's 2023-d features


def protocol_record(cfg: GenerationConfig) -> dict:
    """The protocol strings printed with every number."""
    resize = ("299x299 TF1 bilinear (no half-pixel centres), x/128-1" if cfg.fid_protocol
              == "tf1" else "299x299 torch bilinear align_corners=False, 2x-1")
    return {
        "fid_protocol": cfg.fid_protocol, "network": INCEPTION_VERSION,
        "quantization": "round(clamp(127.5*(x+1), 0, 255)) before Inception",
        "resize": resize, "metric_dtype": "float32 network, TF32 off; statistics in float64",
        "gfid": "Frechet distance of pool3 mean/covariance (float64, symmetric sqrt)",
        "sfid": ("the same distance on mixed_6/conv's first 7 channels (17x17x7 = 2023, "
                 "NHWC order), ADM's evaluator's spatial features"),
        "inception_score": gm.IS_VERSION.format(splits=cfg.is_splits),
        "precision_recall": gm.PR_VERSION.format(k=cfg.pr_k),
        "kid": gm.KID_VERSION.format(subsets=cfg.kid_subsets, size=cfg.kid_subset_size,
                                     seed=cfg.seed),
        "fid_min_images_for_comparison": MIN_IMAGES_WARNING,
    }


def _inception(device: torch.device, logits_path: str | os.PathLike | None):
    """(network, note): the FID Inception with its logits layer when the layer's file is
    found, else without it and a note saying how to get the Inception Score."""
    if logits_path is not None or find_logits_file() is not None:
        return load_inception_with_logits(device, logits_path), None
    return load_inception(device), f"Inception Score not computed: {HINT}"


@torch.no_grad()
def extract(batches: Iterable[torch.Tensor], net: torch.nn.Module, device: torch.device,
            protocol: str = "tf1", progress: bool = False,
            skipped: list[str] | None = None) -> Extracted:
    """Inception pool3 features (and logits if ``net`` has them) of image batches
    ``(B, 3, H, W)`` in [-1, 1] or uint8, under FID protocol ``protocol``."""
    stats, feats, logits, sizes = FeatureStats(), [], [], set()
    spatial = FeatureStats(SPATIAL_DIM)
    if progress:
        batches = bar(batches, unit="batch", desc="inception")
    with tf32_disabled():
        for x in batches:
            x = x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else x.float()
            sizes.add(tuple(x.shape[-2:]))
            f, s = net(resize_for_inception(x.to(device), protocol), spatial=True)
            stats.update(f)                                          # (B, 2048)
            spatial.update(s)                                        # (B, 2023)
            feats.append(f.float().cpu())
            if getattr(net, "fc", None) is not None:
                logits.append(net.logits(f).float().cpu())           # (B, 1008)
    if stats.n == 0:
        why = (f": all {len(skipped)} were skipped as unreadable, e.g. {skipped[0]}"
               if skipped else "")
        raise InputError(f"no images to evaluate{why}")
    return Extracted(stats, torch.cat(feats), torch.cat(logits) if logits else None,
                     next(iter(sizes)) if len(sizes) == 1 else None, spatial)


def _keep(feats: torch.Tensor, cfg: GenerationConfig) -> torch.Tensor:
    """At most ``cfg.ref_max_features`` rows: a random subset (seed ``cfg.seed``)."""
    if feats.shape[0] <= cfg.ref_max_features:
        return feats
    g = torch.Generator().manual_seed(cfg.seed)
    return feats[torch.randperm(feats.shape[0], generator=g)[:cfg.ref_max_features]]


def reference_stats(real_dir: str | os.PathLike, out_npz: str | os.PathLike | None = None,
                    *, resolution: int, crop: str = "center",
                    device: str | torch.device = "cpu", batch_size: int = 50,
                    config: GenerationConfig = GenerationConfig(), inception=None,
                    progress: bool = False) -> ReferenceStats:
    """Statistics of the real images of ``real_dir`` (resized so the shortest side is
    ``resolution``: ADM's center_crop_arr, or a random square), written to ``out_npz`` if given.

    Keeps mean/covariance of all features and at most ``config.ref_max_features`` of
    the features themselves (a random subset, seed ``config.seed``) for PR and KID.
    """
    _check(config)
    device = torch.device(device)
    net = inception or load_inception(device)
    skipped: list[str] = []
    ext = extract(iter_reference(real_dir, resolution, crop, batch_size, skipped), net,
                  device, config.fid_protocol, progress, skipped)
    ref = ReferenceStats(ext.stats, _keep(ext.features, config), config.fid_protocol,
                         INCEPTION_VERSION, resolution, crop, str(real_dir), skipped,
                         spatial=ext.spatial)
    if out_npz is not None:
        save_reference(ref, out_npz)
    return ref


def _reference(ref, size, cfg, device, batch_size, net, progress) -> ReferenceStats:
    if isinstance(ref, ReferenceStats):
        got = ref
    elif Path(ref).is_file():
        got = load_reference(ref)
    elif Path(ref).is_dir():
        if size is None or size[0] != size[1]:
            raise InputError(f"samples of size {size}: a reference folder needs square "
                             "samples of one size (resize them, or pass reference stats)")
        return reference_stats(ref, resolution=size[0], device=device, config=cfg,
                               batch_size=batch_size, inception=net, progress=progress)
    else:
        raise InputError(f"--ref {ref} is neither a folder of real images nor a "
                         "statistics .npz file (make one with `latentae diffusion "
                         "ref-stats REAL_DIR --out STATS.npz`)")
    if got.protocol != cfg.fid_protocol:
        raise InputError(f"reference statistics {ref} use FID protocol {got.protocol!r}, "
                         f"not {cfg.fid_protocol!r}: recompute them or pass "
                         f"--fid-protocol {got.protocol}")
    if got.images is not None:  # an ADM batch's arr_0: features (and moments if absent)
        ext = extract(iter_npz_images(got.images, "arr_0", batch_size), net, device,
                      cfg.fid_protocol, progress)
        got.features = _keep(ext.features, cfg)
        if got.n_known:  # no mu/sigma in the file: ADM computes them from arr_0 too
            got.stats, got.spatial = ext.stats, ext.spatial
        got.images = None
    if size is not None and got.resolution and size != (got.resolution, got.resolution):
        raise InputError(f"samples are {size[0]}x{size[1]} but the reference statistics "
                         f"were made at {got.resolution}x{got.resolution}: recompute them "
                         f"at --resolution {size[0]}")
    return got


def reference_protocol(ref: str | os.PathLike) -> str:
    """The FID protocol a ``--ref`` implies: a statistics file's own (``tf1`` for ADM
    batches, ``pytorch-fid`` for efficientvit's), ``tf1`` for a folder of images."""
    return load_reference(ref).protocol if Path(ref).is_file() else "tf1"


def _check(cfg: GenerationConfig) -> None:
    if cfg.fid_protocol not in PROTOCOLS:
        raise InputError(f"unknown FID protocol {cfg.fid_protocol!r}; choose from {PROTOCOLS}")
    for name in ("is_splits", "pr_k", "kid_subsets", "kid_subset_size", "ref_max_features"):
        if getattr(cfg, name) < 1:
            raise InputError(f"{name} must be at least 1, got {getattr(cfg, name)}")


def _check_ref_folder(ref: str | os.PathLike) -> str | os.PathLike:
    """``ref`` when it is a folder; else the error :func:`_reference` would give later."""
    if not Path(ref).is_dir():
        _reference(ref, None, GenerationConfig(), torch.device("cpu"), 1, None, False)
    return ref


def evaluate_samples(samples: SampleSource, ref: str | os.PathLike | ReferenceStats, *,
                     device: str | torch.device = "cpu", batch_size: int = 50,
                     protocol: str | None = None, config: GenerationConfig | None = None,
                     logits_path: str | os.PathLike | None = None,
                     save_ref: str | os.PathLike | None = None,
                     progress: bool = False) -> dict:
    """gFID, Inception Score, precision/recall and KID of ``samples`` against ``ref``.

    ``samples``: a folder of images, an ``.npz`` (uint8 ``(N, H, W, 3)`` under ``arr_0``,
    ``images`` or ``samples``), a tensor ``(N, 3, H, W)`` or an iterable of batches
    (floats in [-1, 1] or uint8). ``ref``: a folder of real images (resized and centre-
    cropped to the samples' size), a statistics npz, or a ``ReferenceStats``; with a
    folder, ``save_ref`` caches its statistics. ``protocol`` overrides
    ``config.fid_protocol``. Keys of the result: see docs/evaluation.md.
    """
    cfg = config or GenerationConfig()
    if protocol is not None:
        cfg = dataclasses.replace(cfg, fid_protocol=protocol)
    _check(cfg)
    if not isinstance(ref, ReferenceStats):  # a wrong --ref fails before the slow part
        ref = load_reference(ref) if Path(ref).is_file() else _check_ref_folder(ref)
    device = torch.device(device)
    net, is_note = _inception(device, logits_path)
    skipped: list[str] = []
    fake = extract(iter_samples(samples, batch_size, skipped), net, device,
                   cfg.fid_protocol, progress, skipped)
    real = _reference(ref, fake.size, cfg, device, batch_size, net, progress)
    if save_ref is not None:
        save_reference(real, save_ref)
    with tf32_disabled():
        out = _metrics(fake, real, cfg, device)
    out["notes"] = _notes(fake.stats.n, real, skipped, is_note, out)
    return out


def _metrics(fake: Extracted, real: ReferenceStats, cfg: GenerationConfig,
             device: torch.device) -> dict:
    n, n_ref = fake.stats.n, real.stats.n
    out = {"gfid": None, "sfid": None, "inception_score": None, "inception_score_std": None,
           "precision": None, "recall": None, "kid": None, "kid_std": None,
           "n": n, "n_ref": n_ref if real.n_known else None,
           "n_ref_features": int(real.features.shape[0]), "reference": real.describe(),
           "reference_kind": real.kind, "protocol": protocol_record(cfg),
           "config": dataclasses.asdict(cfg)}
    if min(n, n_ref) >= 2:
        out["gfid"] = fid_from_stats(real.stats, fake.stats, warn=False)
    if real.spatial is not None and min(n, real.spatial.n) >= 2:
        out["sfid"] = fid_from_stats(real.spatial, fake.spatial, warn=False)
    if fake.logits is not None and n >= cfg.is_splits:
        out["inception_score"], out["inception_score_std"] = gm.inception_score(
            fake.logits, cfg.is_splits)
    if min(n, real.features.shape[0]) > cfg.pr_k:
        out["precision"], out["recall"] = gm.precision_recall(
            real.features, fake.features, cfg.pr_k, device=device)
    if min(n, real.features.shape[0]) >= 2:
        out["kid"], out["kid_std"] = gm.kid(real.features, fake.features, cfg.kid_subsets,
                                            cfg.kid_subset_size, cfg.seed, device)
        if not gm.kid_spread_meaningful(real.features.shape[0], n, cfg.kid_subset_size):
            out["kid_std"] = None  # the subsets (nearly) repeat one set: no uncertainty
    return out


def _notes(n: int, real: ReferenceStats, skipped: list[str], is_note: str | None,
           out: dict) -> list[str]:
    notes = []
    small = min(n, real.stats.n) if real.n_known else n
    if small < MIN_IMAGES_WARNING:  # as `latentae eval` words it for rFID
        notes.append(f"gFID from {small} images (< {MIN_IMAGES_WARNING}): "
                     "biased upwards, not comparable with published numbers")
    if out["kid"] is not None and out["kid_std"] is None:
        notes.append(gm.KID_SPREAD_NOTE.format(size=out["config"]["kid_subset_size"]))
    if real.spatial is None:
        notes.append("sFID not computed: the reference holds no spatial statistics "
                     "(mu_s/sigma_s); recompute it with `latentae diffusion ref-stats`")
    if not real.resolution:
        notes.append("the reference does not store its image size: check that it matches "
                     "the samples'")
    if real.n_known and real.features.shape[0] < real.stats.n:
        notes.append(f"precision/recall and KID use {real.features.shape[0]} of the "
                     f"{real.stats.n} real features (a random subset, seed in config)")
    if is_note:
        notes.append(is_note)
    notes += [f"{k} not computed: too few images ({n} samples, "
              f"{real.features.shape[0]} real features)"
              for k in ("gfid", "precision", "kid") if out[k] is None]
    if out["inception_score"] is None and not is_note:
        notes.append(f"Inception Score not computed: {n} samples < {out['config']['is_splits']}"
                     " splits")
    bad = skipped + real.skipped
    if bad:
        notes.append(f"{len(bad)} unreadable image(s) skipped: " + ", ".join(bad[:5]))
    return notes


def format_result(r: dict) -> str:
    """A one-screen table of an ``evaluate_samples`` result (counts beside the numbers)."""
    def fmt(v, spec="{:.4f}"):
        return "n/a" if v is None else ("inf" if math.isinf(v) else spec.format(v))
    kid_std = "" if r["kid_std"] is None else f" ± {fmt(r['kid_std'], '{:.5f}')}"
    rows = [("gFID ↓", fmt(r["gfid"], "{:.3f}")), ("sFID ↓", fmt(r.get("sfid"), "{:.3f}")),
            ("Inception Score ↑", f"{fmt(r['inception_score'], '{:.3f}')} ± "
                                  f"{fmt(r['inception_score_std'], '{:.3f}')}"),
            ("precision ↑", fmt(r["precision"])), ("recall ↑", fmt(r["recall"])),
            ("KID ↓", f"{fmt(r['kid'], '{:.5f}')}{kid_std}")]
    n_ref = "real images" if r["n_ref"] is None else f"{r['n_ref']} real images"
    lines = [f"{r['n']} samples vs {n_ref} ({r['n_ref_features']} real features for "
             f"PR/KID), FID protocol {r['protocol']['fid_protocol']} "
             f"({r['protocol']['resize']}; {r['protocol']['network']})",
             f"reference: {r.get('reference', 'n/a')}"]
    lines += [f"{name:<22}{value:>20}" for name, value in rows]
    return "\n".join(lines + [f"note: {s}" for s in r["notes"]])
