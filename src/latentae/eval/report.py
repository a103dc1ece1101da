"""Reports of ``latentae eval``: ``metrics.json`` (values + full protocol), ``report.md``,
``per_image.csv``, ``recon_grid.png``, and the one-screen summary table."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict
from pathlib import Path

from latentae.cards import command_line, files_fingerprint
from latentae.eval import fid, inception, lpips, mmd, psnr_ssim
from latentae.eval.reconstruction import EvalConfig, EvalResult
from latentae.files import atomic_write_bytes
from latentae.io import list_images, save_image
from latentae.version import __version__
from latentae.weights import weight_sha256s

FILES = ("metrics.json", "report.md", "per_image.csv", "recon_grid.png")
_ROWS = (("rFID", "rfid", ".3f", "↓"), ("LPIPS (alex)", "lpips", ".4f", "↓"),
         ("PSNR (dB)", "psnr", ".3f", "↑"), ("SSIM", "ssim", ".4f", "↑"),
         ("MMD² scaled latents", "mmd2_scaled", ".5f", "↓"),
         ("MMD² standardized latents", "mmd2_standardized", ".5f", "↓"))


def protocol(cfg: EvalConfig, model_name: str, model, device: str, n_images: int,
             n_corrupt: int) -> dict:
    """Everything needed to reproduce the numbers (printed with them)."""
    return {
        "model": model_name, "family": model.family, "preset": model.preset,
        "spatial_compression_ratio": model.spatial_compression_ratio,
        "latent_channels": model.latent_channels,
        "resolution": cfg.resolution,
        "crop": f"shortest side resized to {cfg.resolution} (PIL bicubic), {cfg.crop} crop "
                f"{cfg.resolution}x{cfg.resolution}",
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
             "metrics": dict(result.summary)}
    if result.notes:
        entry["notes"] = list(result.notes)
    return entry | {"command": command_line(), "latentae_version": __version__}


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
    n = max(len(result.rows), 1)
    lines.append("seconds/image: " + ", ".join(f"{k} {v / n:.3f}"
                                               for k, v in result.seconds.items()))
    lines += [f"note: {s}" for s in result.notes]
    return "\n".join(lines)


def _json_safe(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # "inf": strict JSON has no Infinity
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_safe(x) for x in v]
    return v


def _markdown(result: EvalResult, proto: dict) -> str:
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
           "", "## Protocol", "", "```json", json.dumps(_json_safe(proto), indent=2), "```"]
    if result.notes:
        md += ["", "## Notes", ""] + [f"- {s}" for s in result.notes]
    md += ["", "![reconstructions](recon_grid.png)",
           "", "Grid rows: original | reconstruction | amplified error "
           f"(×{proto.get('error_gain', 4)})."]
    return "\n".join(md) + "\n"


def write_report(out: str | Path, result: EvalResult, proto: dict) -> dict[str, Path]:
    """Write the four report files into ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n = max(len(result.rows), 1)
    doc = {"metrics": result.summary, "latents": result.latents, "protocol": proto,
           "corrupt_files": result.corrupt, "notes": result.notes,
           "seconds": result.seconds,
           "seconds_per_image": {k: v / n for k, v in result.seconds.items()}}
    atomic_write_bytes(out / "metrics.json",
                       (json.dumps(_json_safe(doc), indent=2) + "\n").encode())
    atomic_write_bytes(out / "report.md", _markdown(result, proto).encode())
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["file", "psnr", "ssim", "lpips"])
    w.writeheader()
    w.writerows(result.rows)
    atomic_write_bytes(out / "per_image.csv", buf.getvalue().encode())
    paths = {name: out / name for name in FILES}
    if result.grid is not None:
        save_image(result.grid, out / "recon_grid.png")
    else:
        paths.pop("recon_grid.png")
    return paths

