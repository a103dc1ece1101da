"""Bench report: a Markdown table (one column per model, ratios to a baseline column)
and JSON. The header states machine, torch, threads, dtype and the measured matmul rate,
so a number is never read without the conditions it was taken under."""

from __future__ import annotations

import json
import os

from latentae.files import atomic_write_text, check_writable

# (label, getter, format); getters return None when a value was not measured
_ROWS = [
    ("encoder params (M)", lambda r: r["encoder_params"] / 1e6, "{:.3f}"),
    ("decoder params (M)", lambda r: r["decoder_params"] / 1e6, "{:.3f}"),
    ("encode GFLOP/image", lambda r: r["gflops_per_image"]["encode"], "{:.2f}"),
    ("decode GFLOP/image", lambda r: r["gflops_per_image"]["decode"], "{:.2f}"),
]
for _mode, _label in (("encode", "encode"), ("decode", "decode"),
                      ("train_encode", "train encode (fwd+bwd)"),
                      ("train_decode", "train decode (fwd+bwd)")):
    _ROWS += [
        (f"{_label} images/s", lambda r, m=_mode: r.get(m, {}).get("images_per_s"), "{:.3g}"),
        (f"{_label} GFLOP/s", lambda r, m=_mode: r.get(m, {}).get("gflops_per_s"), "{:.1f}"),
        (f"{_label} peak memory (MiB)",
         lambda r, m=_mode: None if r.get(m, {}).get("peak_memory_bytes") is None
         else r[m]["peak_memory_bytes"] / 2**20, "{:.0f}"),
    ]


def _fmt(value, fmt: str, base) -> str:
    if value is None:
        return "–"
    text = fmt.format(value)
    if base not in (None, 0):
        text += f" ({value / base:.2f}×)"
    return text


def machine_lines(m: dict) -> list[str]:
    """The machine and its load, the first lines of both bench kinds' headers."""
    return [
        f"- machine: {m['cpu']} ({m['cpu_count']} CPUs), device {m['device']}"
        + (f" ({m['gpu']})" if "gpu" in m else "")
        + f"; torch {m['torch']}, {m['threads']} thread{'s' * (m['threads'] != 1)}; "
        + f"{m['date']}"
        + f"; CPU bf16 instructions: {', '.join(m.get('cpu_bf16') or ['none'])}",
        f"- load average (1 min) at start/end: {m.get('load_average_1m')} / "
        f"{m.get('load_average_1m_end')}",
    ]


def header_lines(report: dict) -> list[str]:
    s, m = report["settings"], report["machine"]
    lines = [
        *machine_lines(m),
        f"- {s['resolution']}² images, batch {s['batch']}, dtype {s['dtype']}"
        + (" (non-float32 by autocast; such columns are named model@dtype)"
           if s["dtype"] != "float32" else "")
        + f", channels_last: {s['channels_last']}"
        + (f", torch.compile backend {s['compile']} (latentae columns)"
           if s.get("compile") else "")
        + f"; {s['warmup']} warm-up call(s), "
        f"median of {s['repeats']}",
        f"- this machine's float32 matmul rate: {m['matmul_float32_gflops']:.0f} GFLOP/s"
        + "".join(f"; {k[7:-7]}: {v:.0f} GFLOP/s" for k, v in m.items()
                  if k.startswith("matmul_") and k != "matmul_float32_gflops"),
        f"- Haar DWT (one level) vs a plain copy of its input: channels_last "
        f"{m['haar']['haar_dwt_cl_GBps']:.2f} vs {m['haar']['copy_cl_GBps']:.2f} GB/s "
        f"({100 * m['haar']['haar_over_copy_cl']:.0f}%), contiguous "
        f"{m['haar']['haar_dwt_GBps']:.2f} vs {m['haar']['copy_GBps']:.2f} GB/s "
        f"({100 * m['haar']['haar_over_copy']:.0f}%)",
        "- peak memory: growth of peak RSS during one extra call (CPU) / CUDA max allocated "
        "(GPU); train GFLOP/s counts backward as 2× forward; glibc allocator tuned: "
        f"{m.get('allocator_tuned', False)}",
    ]
    isolated = [n for n, r in report["results"].items() if r.get("process") == "default"]
    if isolated:
        lines.append(f"- timed in a fresh child process with PyTorch's defaults (allocator "
                     f"untouched, as a plain diffusers script runs): {', '.join(isolated)}")
    return lines


def to_markdown(report: dict, baseline: str | None = None) -> str:
    """The report as Markdown; ``baseline`` names the column ratios refer to."""
    results = report["results"]
    names = list(results)
    if baseline is not None and baseline not in results:
        raise ValueError(f"baseline {baseline!r} is not among the models: {', '.join(names)}")
    base = results[baseline] if baseline else None
    out = ["## latentae bench", "", *header_lines(report), ""]
    if baseline:
        out += [f"Ratios in parentheses are to **{baseline}**.", ""]
    out.append("| | " + " | ".join(names) + " |")
    out.append("|---|" + "---|" * len(names))
    for label, get, fmt in _ROWS:
        vals = [get(results[n]) for n in names]
        if all(v is None for v in vals):
            continue
        b = get(base) if base else None
        out.append(f"| {label} | " + " | ".join(_fmt(v, fmt, b) for v in vals) + " |")
    eq = [results[n].get("equal_outputs") for n in names]
    if any(eq):
        cells = ["–" if e is None else
                 f"{'yes' if e['equal'] else 'NO'} (max diff enc "
                 f"{e['encode']['max_abs_diff']:.1e}, dec {e['decode']['max_abs_diff']:.1e})"
                 for e in eq]
        out.append("| same outputs as latentae | " + " | ".join(cells) + " |")
    if report.get("psnr"):
        dt = next(p["dtype"] for p in report["psnr"].values())
        out += ["", f"Reconstruction PSNR (dB, posterior mode), float32 vs {dt} autocast:", "",
                f"| model | images | float32 | {dt} | change | {dt} vs float32 recon |",
                "|---|---|---|---|---|---|"]
        for name, p in report["psnr"].items():
            out.append(f"| {name} | {p['images']} | {p['psnr_float32']:.3f} | "
                       f"{p['psnr_low']:.3f} | {p['psnr_change_db']:+.4f} | "
                       f"{p['psnr_low_vs_float32']:.2f} |")
    return "\n".join(out) + "\n"


def write_files(json_path: str | os.PathLike | None, document,
                markdown_path: str | os.PathLike | None, text: str) -> None:
    """The one report writer of both bench kinds: ``document`` as JSON and ``text`` as
    Markdown, each atomically where a path is given (a full disk: DiskFullError)."""
    for path, data in ((json_path, json.dumps(document, indent=2) + "\n"),
                       (markdown_path, text)):
        if path is not None:
            check_writable(path)
            atomic_write_text(path, data)


def write_report(report: dict, json_path: str | os.PathLike | None = None,
                 markdown_path: str | os.PathLike | None = None,
                 baseline: str | None = None) -> str:
    """Write JSON and/or Markdown atomically; returns the Markdown text."""
    text = to_markdown(report, baseline)
    write_files(json_path, report, markdown_path, text)
    return text

