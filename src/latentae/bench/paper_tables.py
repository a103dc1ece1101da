"""The papers' speed tables in one self-timed run, for a GPU machine lent for minutes
(``scripts/gpu_bench.sh BUDGET_SECONDS``; ``--rehearse``: the same code at tiny sizes on
the CPU, so the script cannot rot).

Items, the most valuable first; each starts only if its estimated seconds fit in what
is left of the budget, and the JSON and Markdown are rewritten (atomically) before and
after every item, so whatever stops the run, the files hold every finished table and
name the item that was cut:

1. LiteVAE table 3: encoder images/s and peak memory at batch 32, 256², float32 and
   bf16 autocast: the SD-VAE encoder vs LiteVAE-S/B/M/L (``latentae bench``'s columns).
2. DC-AE table 3, eager: UViT-H on 512² f8p2 vs f64p1 latents and DiT-XL f8p2 vs f32p1,
   inference (one network evaluation) and training (fwd + bwd + AdamW) images/s in bf16
   autocast (``latentae bench --diffusion``'s columns) at batch 256, the batch of the
   paper's memory profile; a batch that does not fit is halved until it does (recorded).
3. DC-AE phase-2 memory (§3.2): one training step's peak memory of DC-AE-f64 at 1024²,
   batch 12, training everything vs only the middle layers (the dcae recipe's phase 2).
4. DC-AE table 3 again through ``torch.compile`` (compiling costs minutes, so last).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from latentae.bench import measure, report, runner
from latentae.bench.diffusion import measure_columns
from latentae.bench.diffusion_columns import (
    DiffusionBenchSettings,
    build_columns,
    parse_autoencoders,
)
from latentae.bench.diffusion_report import to_markdown as diffusion_markdown
from latentae.files import atomic_write_text
from latentae.registry import create_model
from latentae.runtime import autocast
from latentae.train.recipes import get_recipe

JSON_FILE, MARKDOWN_FILE = "gpu_bench.json", "gpu_bench.md"


@dataclass(frozen=True)
class DiffusionTable:
    """One model's rows of DC-AE table 3: columns ``NAME:pP`` (baseline first) and the
    paper's throughput ratios of the second column over the first."""

    model: str
    columns: str
    paper_infer: float
    paper_train: float


@dataclass(frozen=True)
class Plan:
    """What one run measures, and at which sizes."""

    device: str
    encoders: tuple[str, ...]
    encoder_resolution: int
    encoder_batch: int
    diffusion: tuple[DiffusionTable, ...]
    diffusion_resolution: int
    diffusion_batch: int
    phase2: tuple[str, int, int]  # (DC-AE preset, resolution, batch)
    compile_backend: str
    warmup: int
    repeats: int
    seconds_per_item: float  # the least time left for an item to start (compiled: more)
    compiled: tuple[str, ...]  # the diffusion models also timed through torch.compile
    matmul_size: int = 1536  # n of the n×n matmul that measures the machine's rate


# paper: DC-AE table 3 (H100): UViT-H f64p1 19.1× inference, 17.9× training over f8p2;
# DiT-XL f32p1 4.8× / 4.5×. LiteVAE table 3: the encoders at batch 32, 256².
GPU = Plan(device="cuda", encoders=("sdvae-f8", "litevae-s", "litevae-b", "litevae-m",
                                    "litevae-l"),
           encoder_resolution=256, encoder_batch=32,
           diffusion=(DiffusionTable("uvit-h", "sdvae-f8:p2,dcae-f64c128:p1", 19.1, 17.9),
                      DiffusionTable("dit-xl", "sdvae-f8:p2,dcae-f32c32:p1", 4.8, 4.5)),
           diffusion_resolution=512, diffusion_batch=256,
           phase2=("dcae-f64c128", 1024, 12),  # paper: §3.2 footnote, 1024², batch 12
           compile_backend="inductor", warmup=2, repeats=5, seconds_per_item=20,
           compiled=("uvit-h", "dit-xl"), matmul_size=8192)
REHEARSAL = Plan(device="cpu", encoders=("sdvae-tiny", "litevae-tiny"),
                 encoder_resolution=64, encoder_batch=1,
                 diffusion=(DiffusionTable("uvit-tiny", "sdvae-tiny:p2,dcae-tiny-f64:p1",
                                           19.1, 17.9),
                            DiffusionTable("dit-tiny", "sdvae-tiny:p2,dcae-tiny-f32:p1",
                                           4.8, 4.5)),
                 diffusion_resolution=64, diffusion_batch=2, phase2=("dcae-tiny-f64", 64, 1),
                 compile_backend="eager", warmup=1, repeats=1, seconds_per_item=0,
                 compiled=("dit-tiny",), matmul_size=128)
# paper: LiteVAE table 3 (Quadro RTX 6000): throughput and memory over the SD-VAE encoder's
LITEVAE_PAPER = {"litevae-s": (5.65, 0.149), "litevae-b": (1.90, 0.356),
                 "litevae-m": (0.621, 1.369), "litevae-l": (0.612, 1.369)}


# --- the items ------------------------------------------------------------------------
def litevae_table3(plan: Plan, progress) -> dict:
    """The encoders' images/s and peak memory (no grad, and a training step's)."""
    models = [(name, create_model(name)) for name in plan.encoders]
    subjects = runner.build_subjects(models, dtypes=("float32", "bfloat16"), note=progress)
    settings = runner.BenchSettings(
        resolution=plan.encoder_resolution, batch=plan.encoder_batch,
        dtype="float32,bfloat16", device=plan.device, warmup=plan.warmup,
        repeats=plan.repeats, modes=("encode", "train_encode"), matmul_size=plan.matmul_size)
    return runner.run_bench(subjects, settings, progress)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _halving(measure_at: Callable[[int], dict], batch: int, device: torch.device,
             progress) -> dict:
    """``measure_at(batch)``, halving the batch after each out-of-memory error."""
    while True:
        try:
            return measure_at(batch)
        except torch.cuda.OutOfMemoryError:
            if batch == 1:
                raise
            progress(f"bench: batch {batch} does not fit; trying {batch // 2}")
        _free(device)  # the failed attempt's tensors are unreachable once out of except
        batch //= 2


def dcae_table3(plan: Plan, table: DiffusionTable, modes: tuple[str, ...], compiled: bool,
                progress) -> dict:
    """``{mode: report}``: images/s of ``table``'s columns in each of ``modes``
    (``infer``, ``train``), the columns built once."""
    settings = DiffusionBenchSettings(
        diffusion=table.model, autoencoders=parse_autoencoders(table.columns),
        resolution=plan.diffusion_resolution, batch=plan.diffusion_batch, dtype="bfloat16",
        device=plan.device, warmup=plan.warmup + compiled, repeats=plan.repeats,
        compile=plan.compile_backend if compiled else None, matmul_size=plan.matmul_size)
    torch.manual_seed(settings.seed)
    columns = build_columns(settings, progress)
    device = torch.device(plan.device)
    out = {}
    for mode in modes:
        def at(batch: int, mode=mode) -> dict:
            s = dataclasses.replace(settings, batch=batch, mode_subset=(mode,))
            return measure_columns(columns, s, progress)
        out[mode] = _halving(at, plan.diffusion_batch, device, progress)
        _free(device)
    columns.clear()  # free the models before the next table
    _free(device)
    return out


def _train_step(model, params: list, x: torch.Tensor, device: torch.device):
    optimizer = torch.optim.AdamW(params, lr=1.6e-5, weight_decay=1e-3)  # paper: phase 2

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, "bfloat16"):
            out = model.decode(model.encode(x).mode())
        F.l1_loss(out.float(), x).backward()
        optimizer.step()
    return step


def phase2_memory(plan: Plan, progress) -> dict:
    """Peak memory growth of one DC-AE training step (L1 loss, AdamW, bf16 autocast)
    training every parameter vs the dcae recipe's phase-2 groups (the middle layers)."""
    preset, resolution, batch = plan.phase2
    device = torch.device(plan.device)
    groups = get_recipe("dcae").phases[1].train_groups
    with device:
        model = create_model(preset)
    model.train().to(memory_format=torch.channels_last)
    chosen = {id(p) for g in groups for p in model.param_groups()[g]}

    def at(b: int) -> dict:
        x = torch.rand(b, 3, resolution, resolution, device=device) * 2 - 1
        x = x.contiguous(memory_format=torch.channels_last)
        out = {"preset": preset, "resolution": resolution, "batch": b,
               "phase2_groups": list(groups)}
        for arm in ("full", "phase2"):
            for p in model.parameters():
                p.requires_grad_(arm == "full" or id(p) in chosen)
            params = [p for p in model.parameters() if p.requires_grad]
            progress(f"bench: phase-2 memory, {arm} ({len(params)} tensors train)")
            out[f"{arm}_params_m"] = sum(p.numel() for p in params) / 1e6
            out[f"{arm}_peak_memory_bytes"] = measure.peak_memory_bytes(
                _train_step(model, params, x, device), device)
            for p in params:
                p.grad = None
            _free(device)
        return out
    return _halving(at, batch, device, progress)


def items(plan: Plan) -> list[tuple[str, float, Callable]]:
    """``(name, least seconds left to start it, run(progress) -> report)``, in order."""
    t = plan.seconds_per_item
    both = ("infer", "train")
    out = [("litevae_table3", t, lambda p: litevae_table3(plan, p))]
    out += [(f"dcae_table3_{d.model}", t, lambda p, d=d: dcae_table3(plan, d, both, False, p))
            for d in plan.diffusion]
    out.append(("dcae_phase2_memory", t / 2, lambda p: phase2_memory(plan, p)))
    # compiling a training step costs about twice an inference's: all inference first
    for mode, least in (("infer", 3 * t), ("train", 6 * t)):
        out += [(f"dcae_table3_{d.model}_{mode}_compiled", least,
                 lambda p, d=d, m=mode: dcae_table3(plan, d, (m,), True, p))
                for d in plan.diffusion if d.model in plan.compiled]
    return out


# --- the report -----------------------------------------------------------------------
def _ratio(a, b) -> str:
    return "–" if not a or not b else f"{a / b:.2f}×"


def _column(name: str, dtype: str) -> str:
    return name if dtype == "float32" else f"{name}@{dtype}"


def _summary_litevae(rep: dict, encoders: tuple[str, ...]) -> list[str]:
    """Each encoder over the first (the SD-VAE's), encode images/s and peak memory."""
    res, lines = rep["results"], []
    for name in encoders[1:]:
        speed, mem = (f"{x:.2f}×" for x in LITEVAE_PAPER[name]) if name in LITEVAE_PAPER \
            else ("–", "–")
        for dt in ("float32", "bfloat16"):
            r, b = res.get(_column(name, dt)), res.get(_column(encoders[0], dt))
            if r is None or b is None:
                continue
            r, b = r["encode"], b["encode"]
            lines += [f"| LiteVAE t3 | {name} / {encoders[0]} encoder, {dt}: images/s | "
                      f"{_ratio(r['images_per_s'], b['images_per_s'])} | {speed} |",
                      f"| LiteVAE t3 | {name} / {encoders[0]} encoder, {dt}: peak memory | "
                      f"{_ratio(r['peak_memory_bytes'], b['peak_memory_bytes'])} | {mem} |"]
    return lines


def _summary_dcae(name: str, rep: dict, table: DiffusionTable) -> list[str]:
    lines = []
    for mode, key, paper in (("infer", "infer_img_s", table.paper_infer),
                             ("train", "train_img_s", table.paper_train)):
        rows = rep.get(mode, {}).get("rows")
        if not rows or len(rows) < 2:
            continue
        batch = rep[mode]["settings"]["batch"]
        lines.append(f"| DC-AE t3 | {table.model} {rows[1]['column']} / {rows[0]['column']}, "
                     f"{mode} b{batch}{' compiled' if 'compiled' in name else ''}: images/s | "
                     f"{_ratio(rows[1][key], rows[0][key])} | {paper:.1f}× |")
    return lines


def summary(state: dict, plan: Plan) -> list[str]:
    """Our ratios beside the papers' (the rows whose items finished)."""
    lines = ["| table | ratio | ours | paper |", "|---|---|---|---|"]
    tables = {f"dcae_table3_{d.model}": d for d in plan.diffusion}
    tables |= {f"{k}_{m}_compiled": d for k, d in list(tables.items()) for m in ("infer", "train")}
    for item in state["items"]:
        rep = item.get("report")
        if item["status"] != "done":
            continue
        if item["name"] == "litevae_table3":
            lines += _summary_litevae(rep, plan.encoders)
        elif item["name"] in tables:
            lines += _summary_dcae(item["name"], rep, tables[item["name"]])
        elif item["name"] == "dcae_phase2_memory":
            lines.append(f"| DC-AE §3.2 | phase-2 / full training peak memory, "
                         f"{rep['preset']} {rep['resolution']}² b{rep['batch']} | "
                         f"{_ratio(rep['phase2_peak_memory_bytes'], rep['full_peak_memory_bytes'])}"
                         " | 0.44× (67.81 / 153.98 GB) |")
    return lines


def to_markdown(state: dict, plan: Plan) -> str:
    m = state["machine"]
    out = ["# GPU bench: the papers' speed tables", "",
           f"- `{state['command']}`; {m.get('gpu', m['cpu'])}, torch {m['torch']}; "
           f"{m['date']}; budget {state['budget_s']:.0f} s",
           "- items: " + ", ".join(f"{i['name']} ({i['status']}"
                                   + (f", {i['seconds']:.0f} s" if "seconds" in i else "")
                                   + ")" for i in state["items"]), "",
           *summary(state, plan), ""]
    for item in state["items"]:
        out += [f"## {item['name']}: {item['status']}", ""]
        if item.get("error"):
            out += ["```", item["error"], "```", ""]
        rep = item.get("report")
        if item["status"] != "done":
            continue
        if item["name"] == "litevae_table3":
            out.append(report.to_markdown(rep, baseline=plan.encoders[0]))
        elif item["name"] == "dcae_phase2_memory":
            out.append("```\n" + json.dumps(rep, indent=1) + "\n```\n")
        else:
            out += [diffusion_markdown(r) for r in rep.values()]
    return "\n".join(out) + "\n"


def write(state: dict, plan: Plan, out: Path) -> None:
    atomic_write_text(out / JSON_FILE, json.dumps(state, indent=1, default=str) + "\n")
    atomic_write_text(out / MARKDOWN_FILE, to_markdown(state, plan))


def run(plan: Plan, out: Path, budget_s: float, command: str, progress=print) -> dict:
    """Every item that fits in ``budget_s`` seconds, in order; returns the state
    written to ``out``."""
    start = time.monotonic()
    device = torch.device(plan.device)
    state = {"command": command, "budget_s": budget_s, "plan": dataclasses.asdict(plan),
             "machine": measure.machine_info(device), "items": []}
    for name, least, fn in items(plan):
        left = budget_s - (time.monotonic() - start)
        item = {"name": name, "status": "started"}
        state["items"].append(item)
        if left < least:
            item.update(status="skipped", note=f"{left:.0f} s left, needs {least:.0f}")
            continue
        write(state, plan, out)  # a run stopped now names the item it cut
        t0 = time.monotonic()
        try:
            item["report"] = fn(progress)
            item["status"] = "done"
        except Exception as e:  # one failed table must not cost the others
            item.update(status="error", error=f"{type(e).__name__}: {e}")
        item["seconds"] = time.monotonic() - t0
        _free(device)
        write(state, plan, out)
    write(state, plan, out)
    return state


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m latentae.bench.paper_tables",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for gpu_bench.json / gpu_bench.md")
    ap.add_argument("--budget", type=float, required=True, help="seconds to stop within")
    ap.add_argument("--rehearse", action="store_true",
                    help="tiny models on the CPU (checks the script, measures nothing)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plan = REHEARSAL if args.rehearse else GPU
    if plan.device == "cuda" and not torch.cuda.is_available():
        print("gpu_bench: no CUDA GPU here (use --rehearse on a CPU)", file=sys.stderr)
        return 2
    command = "python -m latentae.bench.paper_tables " + " ".join(argv or sys.argv[1:])
    state = run(plan, out, args.budget, command,
                progress=lambda m: print(m, file=sys.stderr, flush=True))
    print("\n".join(to_markdown(state, plan).split("\n\n")[:3]))  # title, items, summary
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
