"""The diffusion bench's report: a Markdown table (one column per autoencoder and patch,
ratios to a baseline column) under a header stating the machine, the settings, the FLOP
convention and how each number was taken; JSON as a list of rows, one per column."""

from __future__ import annotations

import os

from latentae.bench.report import machine_lines, write_files
from latentae.errors import InputError

# (label, JSON key, format, how the cell is annotated: "ratio" to the baseline column,
# "matmul" as a share of the machine's matmul rate, None: the value alone)
ROWS = [
    ("latent (C×N×N)", "latent", "{}", None),
    ("tokens", "tokens", "{:d}", "ratio"),
    ("params (M)", "params_m", "{:.1f}", "ratio"),
    ("GFLOP/image per network evaluation", "gflop", "{:.2f}", "ratio"),
    ("GFLOP counted by FlopCounterMode", "gflop_counted", "{:.2f}", None),
    ("encoder GFLOP/image", "encoder_gflop", "{:.2f}", "ratio"),
    ("inference images/s per step", "infer_img_s", "{:.3g}", "ratio"),
    ("inference images/s, best repeat", "infer_best_img_s", "{:.3g}", "ratio"),
    ("inference GFLOP/s", "infer_gflop_s", "{:.1f}", "matmul"),
    ("guided inference images/s per step (2B forward)", "infer_cfg_img_s", "{:.3g}", "ratio"),
    ("guided inference images/s, best repeat", "infer_cfg_best_img_s", "{:.3g}", "ratio"),
    ("guided inference GFLOP/s", "infer_cfg_gflop_s", "{:.1f}", "matmul"),
    ("training images/s (fwd + bwd + AdamW)", "train_img_s", "{:.3g}", "ratio"),
    ("training images/s, best repeat", "train_best_img_s", "{:.3g}", "ratio"),
    ("training GFLOP/s", "train_gflop_s", "{:.1f}", "matmul"),
    ("training images/s, fwd + bwd only", "train_fwd_bwd_img_s", "{:.3g}", "ratio"),
    ("training images/s fwd + bwd, best repeat", "train_fwd_bwd_best_img_s", "{:.3g}", "ratio"),
    ("AdamW step (s)", "optimizer_s", "{:.3f}", "ratio"),
    ("AdamW step (s), best repeat", "optimizer_best_s", "{:.3f}", "ratio"),
    ("training peak memory (MiB)", "peak_mem_mb", "{:.0f}", "ratio"),
    ("inference peak memory (MiB)", "infer_peak_mem_mb", "{:.0f}", "ratio"),
    ("end-to-end training images/s (encoder on the fly)", "e2e_train_img_s", "{:.3g}", "ratio"),
    ("end-to-end training images/s, best repeat", "e2e_train_best_img_s", "{:.3g}", "ratio"),
    ("end-to-end training GFLOP/s", "e2e_train_gflop_s", "{:.1f}", "matmul"),
    ("end-to-end training peak memory (MiB)", "e2e_train_peak_mem_mb", "{:.0f}", "ratio"),
    ("best inference batch (--best-batch)", "infer_best_batch", "{:d}", None),
    ("inference images/s at the best batch", "infer_best_batch_img_s", "{:.3g}", "ratio"),
    ("best guided inference batch", "infer_cfg_best_batch", "{:d}", None),
    ("guided inference images/s at the best batch", "infer_cfg_best_batch_img_s", "{:.3g}",
     "ratio"),
    ("best training batch", "train_best_batch", "{:d}", None),
    ("training images/s at the best batch", "train_best_batch_img_s", "{:.3g}", "ratio"),
    ("best end-to-end training batch", "e2e_best_batch", "{:d}", None),
    ("end-to-end training images/s at the best batch", "e2e_best_batch_img_s", "{:.3g}",
     "ratio"),
]


def cell(value, fmt: str, note: str | None, base=None, matmul: float | None = None) -> str:
    """One table cell: the value, then its ratio to ``base`` or its share of ``matmul``."""
    if value is None:
        return "–"
    if isinstance(value, list):
        return "×".join(str(v) for v in value)
    text = fmt.format(value)
    if note == "ratio" and base:
        text += f" ({value / base:.2f}×)"
    elif note == "matmul" and matmul:
        text += f" ({100 * value / matmul:.0f}% of matmul)"
    return text


def header(report: dict) -> list[str]:
    """The conditions every number was taken under, one bullet each."""
    s, m = report["settings"], report["machine"]
    dtype = s["dtype"] + (" (autocast; parameters and optimizer in float32)"
                          if s["dtype"] != "float32" else "")
    rates = "; ".join(
        f"{k[7:-7]} {v:.0f} GFLOP/s (best of {len(m[k[:-7] + '_samples'])} samples, at the "
        f"start and after each mode: {', '.join(f'{x:.0f}' for x in m[k[:-7] + '_samples'])})"
        for k, v in m.items() if k.startswith("matmul_") and k.endswith("_gflops"))
    lines = [
        *machine_lines(m),
        f"- {s['diffusion']} ({s['num_classes']} classes + null), {s['resolution']}² images, "
        f"batch {s['batch']}, dtype {dtype}; {s['warmup']} warm-up call(s), then the median "
        f"of {s['repeats']} repeats interleaved across the columns (\"best repeat\" rows: the "
        "fastest repeat, the least disturbed on a loaded machine)",
        f"- this machine's n×n matmul rate: {rates}",
        "- FLOPs: analytic (`latentae.diffusion.flops`: matmuls, convolutions and attention; "
        "norms and elementwise ops excluded), cross-checked by FlopCounterMode on a "
        "meta-device forward; **a multiply-add is 2 FLOPs** (the DiT and LiteVAE papers "
        "count it as 1: halve ours to compare). A guided step is 2 evaluations, a training "
        "step 3 (backward = 2× forward)",
        "- inference: one network evaluation per sampling step, no grad; guided: one "
        "forward on 2B (conditional + null labels) and the guidance combination",
        "- training: q(x_t | x_0) on random latents (DDPM linear betas, random t), ε-MSE, "
        "backward, AdamW (lr 1e-4, no weight decay, PyTorch's default implementation); the "
        "AdamW step is also timed alone. The columns share the parameters whose name and "
        "shape agree (the trunk), so one optimizer serves all",
        "- peak memory: growth during one extra call beyond what is resident (model, "
        "optimizer state): CUDA max allocated (GPU) or peak RSS (CPU, glibc malloc as "
        "PyTorch leaves it)",
    ]
    if report.get("best_batch"):
        first = next(iter(next(iter(report["best_batch"].values())).values()))
        lines.append(f"- best batch: doubled from 1 while one call's peak memory stays within "
                     f"{first['memory_limit_bytes'] / 2**20:.0f} MiB, until two doublings gain "
                     "< 5% images/s; the fixed-batch rows above use the batch stated")
    if s["on_the_fly"]:
        lines.append("- end-to-end: the frozen autoencoder encoder's forward (no grad, "
                     "channels_last, a posterior sample times the scaling factor) on "
                     "random images in [-1, 1], then the training step above")
    return lines


def to_markdown(report: dict, baseline: str | None = None) -> str:
    """The report as Markdown; ``baseline`` names the column the ratios refer to
    (default: the first)."""
    rows = report["rows"]
    names = [r["column"] for r in rows]
    baseline = baseline or names[0]
    if baseline not in names:
        raise InputError(f"baseline {baseline!r} is not among the columns: {', '.join(names)}")
    base = rows[names.index(baseline)]
    matmul = report["machine"].get(f"matmul_{report['settings']['dtype']}_gflops")
    out = [f"## latentae bench --diffusion {report['settings']['diffusion']}", ""]
    if report.get("command"):
        out += ["```", report["command"], "```", ""]
    out += [*header(report), "", f"Ratios in parentheses are to **{baseline}**.", "",
            "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, key, fmt, note in ROWS:
        values = [r.get(key) for r in rows]
        if all(v is None for v in values):
            continue
        cells = [cell(v, fmt, note, base.get(key), matmul) for v in values]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def json_rows(report: dict) -> list[dict]:
    """One self-contained row per column: its numbers plus the run's settings and machine."""
    extra = {"settings": report["settings"], "machine": report["machine"],
             "command": report.get("command")}
    return [{**row, **extra} for row in report["rows"]]


def write_report(report: dict, json_path: str | os.PathLike | None = None,
                 markdown_path: str | os.PathLike | None = None,
                 baseline: str | None = None) -> str:
    """Write the JSON rows and/or the Markdown atomically; returns the Markdown."""
    text = to_markdown(report, baseline)
    write_files(json_path, json_rows(report), markdown_path, text)
    return text
