"""Reports of ``latentae eval``: ``metrics.json`` (values + full protocol), ``report.md``,
``per_image.csv``, ``recon_grid.png``, ``spectrum.png`` (the latent diffusability
section), and the one-screen summary table."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from latentae.cards import command_line, files_fingerprint
from latentae.eval import fid, inception, lpips, mmd, psnr_ssim
from latentae.eval.reconstruction import EvalConfig, EvalResult, error_colours
from latentae.eval.spectrum import plot_spectra
from latentae.files import atomic_write_bytes, atomic_write_text
from latentae.io import list_images, save_image
from latentae.version import __version__
from latentae.weights import weight_sha256s

FILES = ("metrics.json", "report.md", "per_image.csv", "recon_grid.png")
SPECTRUM_FILE = "spectrum.png"
_ROWS = (("rFID", "rfid", ".3f", "↓"), ("LPIPS (alex)", "lpips", ".4f", "↓"),
         ("PSNR (dB)", "psnr", ".3f", "↑"), ("SSIM", "ssim", ".4f", "↑"),
         ("MMD² per-position, scaled", "mmd2_scaled", ".5f", "↓"),
         ("MMD² per-position, stdized", "mmd2_standardized", ".5f", "↓"))


def protocol(cfg: EvalConfig, model_name: str, model, device: str, n_images: int,
             n_corrupt: int, diffusability: dict | None = None) -> dict:
    """Everything needed to reproduce the numbers (printed with them); ``diffusability``
    is the protocol record of ``EvalResult.diffusability``."""
    out = {
        "model": model_name, "family": model.family, "preset": model.preset,
        "spatial_compression_ratio": model.spatial_compression_ratio,
        "latent_channels": model.latent_channels,
        "resolution": cfg.resolution,
        "crop": (f"ADM center_crop_arr to {cfg.resolution}x{cfg.resolution} (box-halve while "
                 "the short side >= 2x, then PIL bicubic, centre square)" if cfg.crop ==
                 "center" else f"shortest side resized to {cfg.resolution} (PIL bicubic), "
                 f"random crop {cfg.resolution}x{cfg.resolution}"),
        "images": n_images, "corrupt": n_corrupt, "limit": cfg.limit,
        "latent": "posterior mode", "model_dtype": cfg.dtype,
        "padding": "reflect to a multiple of f, cropped back" if cfg.pad else "none",
        "metric_dtype": "float32, TF32 off; statistics in float64", "device": device,
        "quantization": "round(clamp(127.5*(x+1), 0, 255)) before every metric",
        "psnr": psnr_ssim.PSNR_VERSION, "ssim": psnr_ssim.SSIM_VERSION,
        "lpips": f"{lpips.VERSION}, AlexNet, inputs in [-1, 1], mean over images",
        "rfid": {"network": inception.VERSION, "protocol": cfg.fid_protocol,
                 "resize": ("299x299 TF1 bilinear (no half-pixel centres), x/128-1"
                            if cfg.fid_protocol == "tf1" else
                            "299x299 torch bilinear align_corners=False, 2x-1"),
                 "statistics": "float64 streaming mean / unbiased covariance, "
                               "Frechet distance with symmetric matrix square root"},
        "mmd": mmd.MMD_VERSION + "; scaled = (z - shift_factor)*scaling_factor of the "
               "model, standardized = (z - mean)/std of these latents",
        "fid_min_images_for_comparison": fid.MIN_IMAGES_WARNING,
        "weights_sha256": weight_sha256s(),
        "error_gain": cfg.error_gain, "eval_config": asdict(cfg),
        "latentae_version": __version__,
    }
    if diffusability is not None:
        out["diffusability"] = diffusability["protocol"]
    return out


def protocol_summary(proto: dict) -> str:
    """The protocol of :func:`protocol` on one line (model cards quote it beside the
    metrics; ``metrics.json`` keeps the whole of it)."""
    cfg = proto["eval_config"]
    tiles = f"tiles {cfg['tile']}px overlap {cfg['overlap']}" if cfg.get("tile") else "no tiles"
    return (f"latentae eval: {proto['images']} images ({proto['corrupt']} corrupt), "
            f"{proto['crop']}; {proto['latent']}, {proto['model_dtype']} model, padding "
            f"{proto['padding']}, {tiles}; uint8 before every metric; rFID "
            f"{proto['rfid']['protocol']} ({proto['rfid']['network']}), {proto['lpips']}, "
            f"PSNR/SSIM as scikit-image; latentae {proto['latentae_version']}")


def card_entry(data: str | Path, result: EvalResult, proto: dict) -> dict:
    """What ``latentae eval --update-card`` merges into the model card
    (``pretrained.add_evaluation``): the fingerprint of the images evaluated (the first
    ``limit`` of ``data``'s sorted files, as ``evaluate_reconstruction`` reads them), the
    one-line protocol, the metrics, the notes and the command."""
    files = list_images(data)
    files = files[: proto["limit"]] if proto["limit"] else files
    entry = {"data": files_fingerprint(data, files), "protocol": protocol_summary(proto),
             "metrics": all_metrics(result)}
    if all_notes(result):
        entry["notes"] = all_notes(result)
    return entry | {"command": command_line(), "latentae_version": __version__}


def all_metrics(result: EvalResult) -> dict:
    """The flat metrics of ``metrics.json`` and the card: reconstruction + diffusability."""
    div = result.diffusability
    return {**result.summary, **(div["summary"] if div else {})}


def all_notes(result: EvalResult) -> list[str]:
    div = result.diffusability
    return list(result.notes) + (list(div["notes"]) if div else [])


def _fmt(v, spec: str) -> str:
    return "n/a" if v is None else ("inf" if math.isinf(v) else format(v, spec))


def summary_table(result: EvalResult, proto: dict) -> str:
    """The one-screen summary printed by ``latentae eval``."""
    lat = result.latents
    lines = [f"{proto['model']} on {proto['images']} images at {proto['resolution']}² "
             f"({proto['corrupt']} corrupt), {proto['model_dtype']} model, "
             f"rFID protocol {proto['rfid']['protocol']}",
             f"{'metric':<28}{'value':>12}"]
    lines += [f"{name + ' ' + arrow:<28}{_fmt(result.summary[key], spec):>12}"
              for name, key, spec, arrow in _ROWS]
    lines += [f"{'latent mean / std':<28}{lat['mean']:>12.4f} / {lat['std']:.4f}",
              f"{'suggested scaling_factor':<28}{lat['suggested_scaling_factor']:>12.5f}",
              f"{'suggested shift_factor':<28}{lat['suggested_shift_factor']:>12.5f}"]
    if result.diffusability is not None:
        lines += diffusability_lines(result.diffusability)
    n = max(len(result.rows), 1)
    lines.append("seconds/image: " + ", ".join(f"{k} {v / n:.3f}"
                                               for k, v in result.seconds.items()))
    div_notes = result.diffusability["notes"] if result.diffusability else []
    lines += [f"note: {s}" for s in result.notes + div_notes]
    return "\n".join(lines)


def diffusability_lines(div: dict) -> list[str]:
    """The summary-table lines of the diffusability diagnostics."""
    sm, eq, whole = div["summary"], div["equivariance_psnr"], div["mmd_whole_code"]
    lines = [f"{'latent energy > f_N/2':<28}{_fmt(sm['latent_high_freq_fraction'], '.4f'):>12}"
             f"  (images at latent size {_fmt(sm['image_high_freq_fraction'], '.4f')})",
             f"{'equivariance PSNR x2 / x4':<28}{_fmt(eq['x2'], '.3f'):>12} / "
             f"{_fmt(eq['x4'], '.3f')} dB"]
    if whole is not None:
        floor = whole["null_mmd2_rms"] or [None] * len(whole["sigma"])
        lines += [f"{f'MMD² whole-code σ={s:g}':<28}{_fmt(m, '.3e'):>12} ± {_fmt(e, '.1e')}"
                  f" (null {_fmt(f, '.1e')})"
                  for s, m, e, f in zip(whole["sigma"], whole["mmd2"], whole["mmd2_std"], floor)]
        lines.append(f"{'  whole-code n codes, d':<28}{whole['n_codes']:>12}, "
                     f"{whole['dim']} (LiteVAE table 6 protocol)")
    return lines


def diffusability_markdown(div: dict) -> list[str]:
    """The report.md section of the diffusability diagnostics (``eval.diffusability``)."""
    sp, eq, proto = div["spectrum"], div["equivariance_psnr"], div["protocol"]
    c, h, w = div["latent_shape"]
    md = ["## Latent diffusability", "",
          f"On {div['n_images']} images; latents {c}×{h}×{w} as the diffusion model sees "
          f"them, (z − shift_factor)·scaling_factor with the model's own factors "
          f"({proto['scaling_factor']:g}, {proto['shift_factor']:g}).", "",
          "### Latent spectrum (Skorokhodov et al. 2025)", ""]
    md += _spectrum_markdown(sp, h, w) if sp else ["Not computed: 1×1 latents.", ""]
    md += ["### Scale equivariance (EQ-VAE)", "",
           "| s | PSNR of decode(avgpool_s(z)) vs avgpool_s(x), dB |", "|---|---|",
           f"| 1 (plain reconstruction) | {_fmt(eq['x1'], '.3f')} |",
           f"| 2 | {_fmt(eq['x2'], '.3f')} |", f"| 4 | {_fmt(eq['x4'], '.3f')} |", ""]
    return md + _whole_code_markdown(div["mmd_whole_code"])


def _spectrum_markdown(sp: dict, h: int, w: int) -> list[str]:
    md = [f"![latent spectrum]({SPECTRUM_FILE})", "",
          "| maps | energy above half Nyquist (r > 0.25 cycles/sample) |", "|---|---|",
          f"| latents, all channels | {_fmt(sp['latent_high_freq_fraction'], '.2%')} |"]
    md += [f"| latents, {g} | {_fmt(v, '.2%')} |"
           for g, v in sp["latent_high_freq_fraction_per_group"].items()]
    return md + [f"| images average-pooled to {h}×{w} | "
                 f"{_fmt(sp['image_high_freq_fraction'], '.2%')} |", ""]


def _whole_code_markdown(whole: dict | None) -> list[str]:
    md = ["### MMD² to N(0, I), whole codes (LiteVAE table 6)", ""]
    if whole is None:
        return md + ["Not computed (fewer than 2 images)."]
    md += [f"Each image's whole latent code, flattened to d = {whole['dim']}, against as many "
           f"N(0, I_d) draws: n = {whole['n_codes']} codes, RBF exp(−|x−y|²/(2σ²)) at each "
           "of the paper's bandwidths (absolute; the typical distance under N(0, I) is "
           f"√(2d) = {whole['typical_distance']:.1f}), unbiased estimator, mean ± std over "
           f"{whole['repeats']} reference draws. The null floor is the RMS of the same "
           "estimate between two true N(0, I) sets of n codes: values within a few floors "
           "of 0 are indistinguishable from N(0, I) at this n. This is not the per-position "
           "MMD² of the table above.", "",
           "| σ | MMD² | ± std (reference draws) | null floor (RMS) |", "|---|---|---|---|"]
    floor = whole["null_mmd2_rms"] or [None] * len(whole["sigma"])
    md += [f"| {s:g} | {_fmt(m, '.4e')} | {_fmt(e, '.1e')} | {_fmt(f, '.1e')} |"
           for s, m, e, f in zip(whole["sigma"], whole["mmd2"], whole["mmd2_std"], floor)]
    return md


def json_safe(v: Any) -> Any:
    """``v`` with non-finite floats as strings ("inf", "nan"): strict JSON has neither."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # "inf": strict JSON has no Infinity
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, list):
        return [json_safe(x) for x in v]
    return v


COLOUR_BAR_HEIGHT = 28  # pixels under the grid: the gradient and its labels


def with_colour_bar(grid: Image.Image, gain: float) -> Image.Image:
    """``grid`` with the error column's colour bar under it: 0 to ``255/gain`` uint8
    levels of mean |x − x̂| (``reconstruction._error_image``)."""
    w, h = grid.size
    out = Image.new("RGB", (w, h + COLOUR_BAR_HEIGHT), (255, 255, 255))
    out.paste(grid, (0, 0))
    ramp = error_colours(torch.linspace(0, 1, max(w - 8, 2)).expand(10, -1))  # (3, 10, W)
    out.paste(Image.fromarray(ramp.permute(1, 2, 0).numpy()), (4, h + 2))
    draw, top = ImageDraw.Draw(out), 255 / gain
    draw.text((4, h + 14), "0", fill=(0, 0, 0))
    label = f"mean |error|, uint8 levels: {top:.3g}+"
    draw.text((w - 4 - draw.textlength(label), h + 14), label, fill=(0, 0, 0))
    return out


def _markdown(result: EvalResult, proto: dict, extra: list[str]) -> str:
    md = [f"# latentae eval: {proto['model']}", "", "| metric | value |", "|---|---|"]
    md += [f"| {name} {arrow} | {_fmt(result.summary[key], spec)} |"
           for name, key, spec, arrow in _ROWS]
    lat = result.latents
    md += ["", "## Latents", "", f"- mean {lat['mean']:.5f}, std {lat['std']:.5f}, "
           f"RMS {lat['rms']:.5f}",
           f"- suggested `scaling_factor` {lat['suggested_scaling_factor']:.5f}, "
           f"`shift_factor` {lat['suggested_shift_factor']:.5f}",
           "- per-channel mean: " + ", ".join(f"{v:.4f}" for v in lat["channel_mean"]),
           "- per-channel std: " + ", ".join(f"{v:.4f}" for v in lat["channel_std"]),
           "- MMD² per-position: the C-dimensional vector at each latent position, "
           f"{lat.get('mmd_vectors', 0)} of them drawn uniformly from all images, against "
           "N(0, I_C) (RBF σ = (0.5, 1, 2)·√C); *scaled* = the model's factors, "
           "*stdized* = these latents' own mean/std. Not LiteVAE table 6's whole-code "
           "MMD²."]
    if result.diffusability is not None:
        md += ["", *diffusability_markdown(result.diffusability)]
    if extra:
        md += ["", *extra]
    md += ["", "## Protocol", "", "```json", json.dumps(json_safe(proto), indent=2), "```"]
    notes = result.notes + (result.diffusability["notes"] if result.diffusability else [])
    if notes:
        md += ["", "## Notes", ""] + [f"- {s}" for s in notes]
    gain = proto.get("error_gain", 4)
    md += ["", "![reconstructions](recon_grid.png)",
           "", f"Grid rows: original | reconstruction | error: the mean over RGB of "
           f"|x − x̂| in uint8 levels, the colour bar below (×{gain:g}: "
           f"{255 / gain:.3g} levels and more are the top colour)."]
    return "\n".join(md) + "\n"


def write_report(out: str | Path, result: EvalResult, proto: dict,
                 extra_json: dict | None = None,
                 extra_markdown: list[str] = ()) -> dict[str, Path]:
    """Write the report files into ``out``; returns their paths. ``extra_json`` (top-level
    keys of metrics.json) and ``extra_markdown`` (lines of report.md, before the
    protocol) carry work done after the pass (``latentae eval --diffusion-proxy``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n = max(len(result.rows), 1)
    div = result.diffusability
    doc = {"metrics": all_metrics(result),
           "latents": result.latents, "diffusability": div,
           "protocol": proto, "corrupt_files": result.corrupt, "notes": all_notes(result),
           "seconds": result.seconds,
           "seconds_per_image": {k: v / n for k, v in result.seconds.items()},
           **(extra_json or {})}
    atomic_write_bytes(out / "metrics.json",
                       (json.dumps(json_safe(doc), indent=2) + "\n").encode())
    atomic_write_text(out / "report.md", _markdown(result, proto, list(extra_markdown)))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["file", "psnr", "ssim", "lpips"])
    w.writeheader()
    w.writerows(result.rows)
    atomic_write_text(out / "per_image.csv", buf.getvalue())  # names as their bytes
    paths = {name: out / name for name in FILES}
    if result.grid is not None:
        save_image(with_colour_bar(result.grid, proto.get("error_gain", 4)),
                   out / "recon_grid.png")
    else:
        paths.pop("recon_grid.png")
    if div is not None and div["spectrum"] is not None:
        plot_spectra(div["spectrum"], out / SPECTRUM_FILE,
                     title=f"latent spectrum: {proto['model']}")
        paths[SPECTRUM_FILE] = out / SPECTRUM_FILE
    return paths

