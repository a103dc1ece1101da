"""The regression report of a fine-tune: did the new weights get worse anywhere?

A run that starts from a saved model (``--model DIR``: a latentae or diffusers
directory) ends, after the export, by measuring the model it started from ("before",
reloaded from ``DIR``) and the exported EMA model ("after") on the same images: the
user's validation set (``--val-data``) and a general reference set
(``--reference-data``), whichever are given. For each metric it reports both means, the
mean per-image difference ``after − before`` and its 95% confidence interval from a
paired bootstrap (the images are resampled with replacement, each keeping its own
before/after pair; fixed seed, so the report repeats), and a flag when the reference
PSNR fell by more than ``regression_tolerance`` dB. It also reports how far the
latents moved (``finetune-decoder`` freezes the encoder: exactly 0), and shows the first
:data:`SHOWN` images of each set with both reconstructions (``RUN/regression_SET.png``).
Below :data:`MIN_CI_IMAGES` images no interval is given: a bootstrap over a handful of
images describes those images, not the model. A start folder whose card is tagged
``untrained`` (random weights, e.g. ``latentae demo``'s ``init/``) gets no report.
It also gives the diffusability diagnostics of both models (``eval/diagnostics.py``;
what ``eqvae-finetune`` is for).

Files (through ``latentae.files``): ``RUN/regression.json``, ``RUN/regression.md`` and
the PNGs.
The metrics are those of validation (``train/validation.py``: PSNR and SSIM on uint8
images, ``eval/psnr_ssim.py``; LPIPS-Alex when its weights are cached).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from latentae.cards import read_card
from latentae.eval.bootstrap import bootstrap_mean_ci
from latentae.eval.diagnostics import diagnostics
from latentae.eval.psnr_ssim import PSNR_VERSION, SSIM_VERSION, mean_finite
from latentae.eval.report import json_safe
from latentae.files import atomic_write_text
from latentae.io import image_grid, save_image
from latentae.pretrained import load
from latentae.train.config import TrainConfig
from latentae.train.validation import load_center_crops, optional_lpips, per_image_metrics

__all__ = ["RegressionCheck", "paired_bootstrap", "report_markdown", "verdict"]

RESAMPLES = 2000  # bootstrap resamples of the images
SEED = 0
LEVEL = 0.95
MIN_CI_IMAGES = 10  # ours: fewer images get means and deltas, no interval
SHOWN = 6  # images per set drawn before / after
# metric -> (label, True if higher is better)
METRICS = {"psnr": ("PSNR (dB)", True), "ssim": ("SSIM", True), "lpips": ("LPIPS", False)}


def paired_bootstrap(before: torch.Tensor, after: torch.Tensor, resamples: int = RESAMPLES,
                     seed: int = SEED, level: float = LEVEL) -> dict[str, float]:
    """Mean paired difference ``after − before`` of two per-image metrics ``(N,)`` and
    its percentile bootstrap CI: ``resamples`` draws of N images with replacement (each
    image keeps its pair), the mean difference of each draw, the ``(1 ± level)/2``
    quantiles of those means. Pairs with a non-finite value (PSNR of an exact
    reconstruction) are left out; ``n`` says how many were used."""
    d = after.double() - before.double()
    d = d[torch.isfinite(d)]
    if len(d) < max(1, MIN_CI_IMAGES):
        delta = float(d.mean()) if len(d) else math.nan
        return {"delta": delta, "ci_low": math.nan, "ci_high": math.nan, "n": len(d)}
    lo, hi = bootstrap_mean_ci(d.numpy(), level, resamples, seed)
    return {"delta": float(d.mean()), "ci_low": float(lo), "ci_high": float(hi),
            "n": len(d)}


@torch.no_grad()
def latent_shift(before: nn.Module, after: nn.Module, images: torch.Tensor) -> float:
    """Largest ``|z_after − z_before|`` of the posterior modes over ``images``."""
    dev, worst = next(before.parameters()).device, 0.0
    for x in images.split(8):
        x = x.to(dev)
        diff = after.encode(x).mode().float() - before.encode(x).mode().float()
        worst = max(worst, float(diff.abs().max()))
    return worst


def compare(before: nn.Module, after: nn.Module, images: torch.Tensor,
            lpips: nn.Module | None, grid: Path | None = None) -> dict[str, Any]:
    """Both models on ``images`` ``(N, 3, R, R)``: per metric the two means, the paired
    delta and its CI; and the latent shift. ``grid``: a PNG of the first :data:`SHOWN`
    images, columns image | before | after."""
    a, rec_a = per_image_metrics(before, images, lpips)
    b, rec_b = per_image_metrics(after, images, lpips)
    metrics = {k: {"before": mean_finite(a[k]), "after": mean_finite(b[k]),
                   **paired_bootstrap(a[k], b[k])} for k in a}
    out = {"images": len(images), "metrics": metrics,
           "latent_max_abs_diff": latent_shift(before, after, images)}
    if grid is not None:
        save_image(image_grid([[x, r0.clamp(-1, 1), r1.clamp(-1, 1)] for x, r0, r1 in
                               zip(images[:SHOWN], rec_a[:SHOWN], rec_b[:SHOWN])]), grid)
        out["grid"] = grid.name
    if len(images) >= 2:  # the diffusability diagnostics of both (eval/diagnostics.py)
        out["diffusability"] = {"before": diagnostics(before, images),
                                "after": diagnostics(after, images)}
    return out


class RegressionCheck:
    """The images of the report, loaded when the run starts (a bad folder fails then,
    not after training), and :meth:`write` at the export."""

    def __init__(self, cfg: TrainConfig, resolution: int) -> None:
        self.cfg, self.resolution = cfg, resolution
        folders = {"validation": (cfg.val_data, cfg.val_images),
                   "reference": (cfg.reference_data, cfg.reference_images)}
        self.sets = {name: (folder, load_center_crops(folder, resolution, limit))
                     for name, (folder, limit) in folders.items() if folder}

    @staticmethod
    def wanted(cfg: TrainConfig) -> bool:
        """A report is written when the run starts from a model directory and has a
        validation or reference set."""
        return (Path(cfg.model).is_dir() and bool(cfg.val_data or cfg.reference_data)
                and not untrained(cfg.model))

    def write(self, after: nn.Module, folder: Path) -> dict[str, Any]:
        """Measure the starting model (reloaded from ``cfg.model``) and ``after``; write
        ``folder/regression.json`` and ``folder/regression.md``; return the document."""
        device = next(after.parameters()).device
        before = load(self.cfg.model, device).eval()
        lpips = optional_lpips("alex", device, True)
        doc = {"before": str(self.cfg.model), "after": str(folder / "model"),
               "recipe": self.cfg.recipe, "protocol": self.protocol(lpips is not None),
               "sets": {name: {"data": str(path), **compare(
                   before, after, images, lpips, folder / f"regression_{name}.png")}
                        for name, (path, images) in self.sets.items()}}
        doc.update(verdict(doc["sets"], self.cfg.regression_tolerance))
        atomic_write_text(folder / "regression.json", json.dumps(json_safe(doc), indent=2))
        atomic_write_text(folder / "regression.md", report_markdown(doc))
        print(("REGRESSION: " if doc["regressed"] else "regression check: ") + doc["summary"])
        return doc

    def protocol(self, with_lpips: bool) -> dict[str, Any]:
        return {"psnr": PSNR_VERSION, "ssim": SSIM_VERSION,
                "lpips": "LPIPS v0.1 AlexNet on uint8 images" if with_lpips else
                "off: weights not cached (`latentae weights fetch`)",
                "images": f"first N files (sorted), shortest side resized to "
                          f"{self.resolution}, center crop {self.resolution}x{self.resolution}",
                "model": "posterior mode; after = the exported EMA weights",
                "delta": "after - before, mean over images",
                "ci": f"{LEVEL:.0%} paired bootstrap, {RESAMPLES} resamples of the images, "
                      f"seed {SEED}, percentile; none below {MIN_CI_IMAGES} images"}


def untrained(folder: str) -> bool:
    """The start folder's card is tagged ``untrained``: random weights, nothing to keep."""
    fields, _ = read_card(folder)
    return "untrained" in ((fields or {}).get("tags") or [])


def verdict(sets: dict[str, Any], tolerance: float) -> dict[str, Any]:
    """``regressed`` when the reference set's mean PSNR delta is below ``-tolerance``
    dB (the point estimate; the CI is reported beside it)."""
    if "reference" not in sets:
        return {"tolerance_psnr_db": tolerance, "regressed": False,
                "summary": "no reference set (--reference-data): nothing to flag"}
    psnr = sets["reference"]["metrics"]["psnr"]
    regressed = psnr["delta"] < -tolerance  # nan (no finite pair) is not a regression
    ci = (f" (95% CI [{psnr['ci_low']:+.3f}, {psnr['ci_high']:+.3f}])"
          if math.isfinite(psnr["ci_low"]) else f" (n = {psnr['n']}: no interval)")
    summary = (f"reference PSNR {psnr['delta']:+.3f} dB{ci}, tolerance -{tolerance:g} dB: "
               + ("worse than the tolerance" if regressed else "within the tolerance"))
    return {"tolerance_psnr_db": tolerance, "regressed": bool(regressed), "summary": summary}


def _fmt(v: float, digits: int) -> str:
    return f"{v:.{digits}f}" if math.isfinite(v) else str(v)


def _set_table(result: dict[str, Any]) -> list[str]:
    lines = ["| metric | before | after | Δ after − before | 95% CI | images |",
             "|---|---|---|---|---|---|"]
    for k, m in result["metrics"].items():
        label, up = METRICS[k]
        digits = 2 if k == "psnr" else 4
        ci = f"[{_fmt(m['ci_low'], digits)}, {_fmt(m['ci_high'], digits)}]" \
            if math.isfinite(m["ci_low"]) else f"— (< {MIN_CI_IMAGES} images)"
        lines.append(f"| {label} {'↑' if up else '↓'} | {_fmt(m['before'], digits)} | "
                     f"{_fmt(m['after'], digits)} | {_fmt(m['delta'], digits)} | {ci} | "
                     f"{m['n']} |")
    return lines


DIFFUSABILITY_ROWS = ("latent_hf_fraction", "image_hf_fraction", "equivariance_psnr_x2",
                     "mmd2", "mmd2_null", "scaling_factor", "noise_psnr_sigma0.1",
                     "noise_psnr_sigma0.3")


def _diffusability_table(d: dict[str, Any] | None) -> list[str]:
    """Before/after of the diffusability diagnostics (eval/diagnostics.py)."""
    if not d:
        return []
    lines = ["Diffusability diagnostics (eval/diagnostics.py):", "",
             "| diagnostic | before | after |", "|---|---|---|"]
    for k in DIFFUSABILITY_ROWS:
        b, a = d["before"].get(k), d["after"].get(k)
        if b is not None and a is not None:
            lines.append(f"| {k} | {b:.4g} | {a:.4g} |")
    return [*lines, ""]


def report_markdown(doc: dict[str, Any]) -> str:
    """``regression.md``: one table per image set, the latent shift, the verdict and the
    protocol."""
    out = ["# Regression report", "",
           f"before: `{doc['before']}` (the model the run started from) · after: "
           f"`{doc['after']}` (recipe `{doc['recipe']}`)", "",
           f"**{'REGRESSION' if doc['regressed'] else 'OK'}**: {doc['summary']}", ""]
    for name, result in doc["sets"].items():
        out += [f"## {name}: `{result['data']}` ({result['images']} images)", "",
                *_set_table(result), "",
                f"latents: max |z_after − z_before| = {result['latent_max_abs_diff']:.3g}"
                + (" (the encoder is unchanged)" if result["latent_max_abs_diff"] == 0
                   else ""), ""]
        if result.get("grid"):
            out += [f"![{name}: image | before | after]({result['grid']})", "",
                    f"Columns: the image, the model before, the model after (first "
                    f"{min(SHOWN, result['images'])} images).", ""]
        out += _diffusability_table(result.get("diffusability"))
    out += ["## Protocol", "", *[f"- {k}: {v}" for k, v in doc["protocol"].items()], ""]
    return "\n".join(out)
