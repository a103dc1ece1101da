"""Measure subjects side by side in one run: params, GFLOPs, images/s, peak memory.

``run_bench`` builds the models, their diffusers twins when asked, measures the
machine's float32 matmul rate and the Haar DWT against a copy, then each subject in
turn. Inputs are fixed random tensors (throughput does not depend on content).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from latentae import runtime
from latentae.bench import measure
from latentae.bench.isolated import DefaultProcessTimer
from latentae.bench.settings import Settings
from latentae.bench.subjects import (
    TWIN_FAMILIES,
    Subject,
    diffusers_subject,
    diffusers_twin,
    latentae_subject,
    on_meta_device,
    onnxruntime_subject,
    with_dtype,
)
from latentae.errors import InputError

MODES = ("encode", "decode", "train_encode", "train_decode")


@dataclass(kw_only=True)
class BenchSettings(Settings):
    """One autoencoder bench run's settings (all recorded in the report): the shared
    record (``dtype`` may name several, one column each; ``compile`` applies to the
    latentae columns) plus the modes, memory format and allocator."""

    modes: tuple[str, ...] = MODES
    channels_last: str = "latentae"  # "latentae", "all" or "none"
    tune_allocator: bool = True  # glibc keeps freed large blocks (runtime.tune_allocator)
    extras: dict = field(default_factory=dict)

    def check(self) -> None:
        super().check()
        bad = sorted(set(self.modes) - set(MODES))
        if bad or not self.modes:
            raise InputError(f"unknown mode(s) {bad}; valid: {', '.join(MODES)}")
        if self.channels_last not in ("latentae", "all", "none"):
            raise InputError("channels_last must be 'latentae', 'all' or 'none'")


def _uses_channels_last(s: Subject, settings: BenchSettings) -> bool:
    return settings.channels_last == "all" or (
        settings.channels_last == "latentae" and s.kind == "latentae"
        and getattr(s.module, "channels_last_inference", True))


def _inputs(s: Subject, settings: BenchSettings, batch: int, device: torch.device):
    g = torch.Generator().manual_seed(settings.seed)
    r, f = settings.resolution, s.compression
    if r % f:
        raise InputError(f"resolution {r} is not divisible by {s.name}'s compression {f}")
    x = torch.rand(batch, 3, r, r, generator=g) * 2 - 1  # (B, 3, R, R) in [-1, 1]
    z = torch.randn(batch, s.latent_channels, r // f, r // f, generator=g)
    x, z = x.to(device), z.to(device)
    if _uses_channels_last(s, settings):
        x, z = (t.contiguous(memory_format=torch.channels_last) for t in (x, z))
    return x, z


def _mode_fn(s: Subject, mode: str, x: torch.Tensor, z: torch.Tensor, device: torch.device,
             dtype: torch.dtype, compile: str | None = None):
    fwd = s.encode if mode.endswith("encode") else s.decode
    if s.kind == "latentae":  # the twins run as their library ships them
        fwd = runtime.compile_module(fwd, compile)
    inp = x if mode.endswith("encode") else z
    if not mode.startswith("train"):
        def infer() -> torch.Tensor:
            with torch.no_grad(), runtime.autocast(device, dtype):
                return fwd(inp)
        return infer

    s.module.requires_grad_(True)  # latentae.load hands out a frozen model (eval, no grad)
    params = list(s.module.parameters())

    def train_step() -> None:
        for p in params:
            p.grad = None
        with runtime.autocast(device, dtype):
            out = fwd(inp)
        out.float().square().mean().backward()
    return train_step


def place_module(s: Subject, settings: BenchSettings) -> None:
    """Move the subject's module to the device and memory format it is timed in."""
    s.module.to(torch.device(settings.device))
    # explicit either way: latentae.load hands out channels_last weights on CPU
    s.module.to(memory_format=runtime.memory_format(_uses_channels_last(s, settings)))


def static_measures(s: Subject, settings: BenchSettings) -> dict:
    """Parameters and GFLOPs per image (one image, FlopCounterMode) of a subject."""
    place_module(s, settings)
    return {"process": s.process, "kind": s.kind, "twin_of": s.twin_of, "dtype": s.dtype,
            "encoder_params": s.encoder_params,
            "decoder_params": s.decoder_params,
            "channels_last": _uses_channels_last(s, settings),
            "gflops_per_image": {part: _count_flops(s, part, settings) / 1e9
                                 for part in ("encode", "decode")}}


def _count_flops(s: Subject, part: str, settings: BenchSettings) -> int:
    """FLOPs of one image's encode or decode, on the meta device when the model allows
    (no compute), else by running it."""
    try:
        meta = on_meta_device(s)
        x1, z1 = _inputs(meta, settings, 1, torch.device("meta"))
    except (RuntimeError, NotImplementedError):
        meta, (x1, z1) = None, _inputs(s, settings, 1, torch.device(settings.device))
    target = meta or s
    fn = target.encode if part == "encode" else target.decode
    try:
        return measure.count_flops(lambda: fn(x1 if part == "encode" else z1))
    except (RuntimeError, NotImplementedError):
        if meta is None:
            raise
        x1, z1 = _inputs(s, settings, 1, torch.device(settings.device))
        fn = s.encode if part == "encode" else s.decode
        return measure.count_flops(lambda: fn(x1 if part == "encode" else z1))


def prepared_call(s: Subject, mode: str, settings: BenchSettings):
    """The call that ``mode`` times for ``s`` (in ``s.dtype``) on fixed inputs, after its
    ``settings.warmup`` untimed runs (used here and in the default-process child)."""
    device = torch.device(settings.device)
    x, z = _inputs(s, settings, settings.batch, device)
    fn = _mode_fn(s, mode, x, z, device, runtime.dtype_from_name(s.dtype), settings.compile)
    for _ in range(max(settings.warmup, settings.compile is not None)):  # compiles here
        fn()
    return fn


def _timers(s: Subject, mode: str, settings: BenchSettings, children: dict):
    """``(time, peak)`` callables for one subject and mode, after its warm-up; a
    ``process="default"`` subject is timed in its child process (``children[id(module)]``)."""
    if s.process == "default":
        return children[id(s.module)].prepare(mode, s.dtype)
    device = torch.device(settings.device)
    fn = prepared_call(s, mode, settings)
    if s.kind == "onnxruntime":  # its arena keeps the warm-up's buffers: no RSS growth
        return (lambda: measure.time_once(fn, device)), (lambda: None)
    return (lambda: measure.time_once(fn, device)), (
        lambda: measure.peak_memory_bytes(fn, device))


def time_mode(subjects: list[Subject], mode: str, settings: BenchSettings,
              children: dict | None = None) -> dict[str, dict]:
    """Time ``mode`` for every subject with the repeats *interleaved* (s1, s2, s1, s2, ...)
    so that a change in machine load hits every column alike."""
    subjects = [s for s in subjects if s.trainable or not mode.startswith("train")]
    timers = {s.name: _timers(s, mode, settings, children or {}) for s in subjects}
    times, peaks = measure.interleave(timers, settings.repeats)
    for s in subjects:  # drop the last training step's gradients before the next mode
        for p in s.module.parameters():
            p.grad = None
    out = {}
    for name, ts in times.items():
        t = measure.median(ts)
        out[name] = {"images_per_s": settings.batch / t, "median_s": t, "min_s": min(ts),
                     "times_s": ts, "peak_memory_bytes": peaks[name]}
    return out


def compare_outputs(a: Subject, b: Subject, settings: BenchSettings) -> dict:
    """Max |a − b| of the encode and decode outputs on the same inputs (``b``'s dtype)."""
    device, dtype = torch.device(settings.device), runtime.dtype_from_name(b.dtype)
    xa, za = _inputs(a, settings, 1, device)
    xb, zb = _inputs(b, settings, 1, device)
    res = {}
    with torch.no_grad(), runtime.autocast(device, dtype):
        for part, (fa, fb, ia, ib) in {"encode": (a.encode, b.encode, xa, xb),
                                       "decode": (a.decode, b.decode, za, zb)}.items():
            oa, ob = fa(ia).float(), fb(ib).float()
            scale = max(1.0, float(oa.abs().max()))
            res[part] = {"max_abs_diff": float((oa - ob).abs().max()), "scale": scale}
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    res["tolerance"] = tol
    res["equal"] = all(res[p]["max_abs_diff"] <= tol * res[p]["scale"]
                       for p in ("encode", "decode"))
    return res


COMPARE = {"diffusers": "same", "diffusers-default": "default", "onnxruntime": "same"}


def _compared(name: str, model, kinds: list[str], note) -> list[Subject]:
    """The columns ``kinds`` add for one model: its diffusers twins (where its family has
    one; else a note), then its onnxruntime column (every family)."""
    twins = [k for k in kinds if k.startswith("diffusers")]
    out = []
    if twins and model.family in TWIN_FAMILIES:
        twin = diffusers_twin(model)
        out += [diffusers_subject(twin, f"{k}:{name}", name, COMPARE[k]) for k in twins]
    elif twins:
        note(f"bench: {name} ({model.family}) has no diffusers twin; measured alone")
    if "onnxruntime" in kinds:
        note(f"bench: {name}: exporting to ONNX for onnxruntime")
        out.append(onnxruntime_subject(model, name))
    return out


def build_subjects(models: list, compare: str | None = None, note=print,
                   dtypes: list[str] | tuple[str, ...] = ("float32",)) -> list[Subject]:
    """``models``: ``(name, Autoencoder)`` pairs. ``compare``: comma-separated
    ``diffusers`` (the twin timed in this process, ``diffusers:NAME``),
    ``diffusers-default`` (timed in a fresh process with PyTorch's defaults,
    ``diffusers-default:NAME``) and/or ``onnxruntime`` (the model's ONNX graphs on
    onnxruntime's CPU provider, ``onnxruntime:NAME``, float32 inference only); they follow
    their model (families without a diffusers twin are noted and skipped). With several
    ``dtypes`` every column but onnxruntime's repeats per dtype after the first
    (``name@dtype``)."""
    kinds = [k for k in (compare or "").split(",") if k]
    if any(k not in COMPARE for k in kinds):
        raise InputError(f"--compare takes {' and/or '.join(COMPARE)}, got {compare!r}")
    if "onnxruntime" in kinds and dtypes[0] != "float32":
        raise InputError("--compare onnxruntime compares float32 graphs: put float32 first "
                         f"in --dtype (got {','.join(dtypes)})")
    subjects = []
    for name, model in models:
        model.eval()
        subjects += [latentae_subject(model, name), *_compared(name, model, kinds, note)]
    if any(k.startswith("diffusers") for k in kinds) and not any(
            s.kind == "diffusers" for s in subjects):
        raise InputError(f"--compare {compare}: none of the models has a diffusers twin "
                         f"(families with one: {sorted(TWIN_FAMILIES)})")
    first = [dataclasses.replace(s, dtype=dtypes[0]) for s in subjects]
    return first + [with_dtype(s, dt) for dt in dtypes[1:] for s in first
                    if s.kind != "onnxruntime"]


def check_resolution(resolution: int, models: list[tuple[str, int]]) -> None:
    """Every ``(name, compression factor)`` divides ``resolution``: checked before the
    subjects are built, too (an ONNX export takes 40 s; sweep OX03)."""
    for name, factor in models:
        if resolution % factor:
            raise InputError(f"resolution {resolution} is not divisible by {name}'s "
                             f"compression factor {factor}")


def run_bench(subjects: list[Subject], settings: BenchSettings, progress=print) -> dict:
    """Measure the machine, then every subject; returns the JSON-able report."""
    # One function (43 lines): the measuring order (machine, static, timed modes) reads
    # top to bottom, and the child processes' lifetime is one try/finally.
    settings.check()
    for s in subjects:  # fail before any measuring
        if s.kind == "onnxruntime" and settings.device != "cpu":
            raise InputError(f"{s.name} runs onnxruntime's CPU provider: use --device cpu")
    check_resolution(settings.resolution, [(s.name, s.compression) for s in subjects])
    device = torch.device(settings.device)
    torch.manual_seed(settings.seed)
    machine = measure.machine_info(device)
    machine["allocator_tuned"] = settings.tune_allocator and runtime.tune_allocator()
    n = settings.matmul_size
    machine["matmul_float32_gflops"] = measure.matmul_gflops(device, n=n)
    for dt in settings.dtypes:
        if dt != "float32":
            machine[f"matmul_{dt}_gflops"] = measure.matmul_gflops(
                device, runtime.dtype_from_name(dt), n=n)
    machine["haar"] = measure.copy_vs_haar(device, settings.batch, settings.resolution)
    by_name = {s.name: s for s in subjects}
    results = {}
    for s in subjects:
        progress(f"bench: {s.name}: params, FLOPs")
        results[s.name] = static_measures(s, settings)
        if s.twin_of is not None:
            results[s.name]["equal_outputs"] = compare_outputs(by_name[s.twin_of], s, settings)
    children = {}
    try:
        for s in subjects:
            if s.process == "default" and id(s.module) not in children:
                progress(f"bench: {s.name}: starting its default-settings process")
                children[id(s.module)] = DefaultProcessTimer(s.module, settings, s.name)
        for mode in settings.modes:
            progress(f"bench: {mode} ({len(subjects)} models, repeats interleaved)")
            part = "encode" if mode.endswith("encode") else "decode"
            factor = 3.0 if mode.startswith("train") else 1.0  # backward ≈ 2× forward FLOPs
            for name, r in time_mode(subjects, mode, settings, children).items():
                r["gflops_per_s"] = factor * results[name]["gflops_per_image"][part] * r[
                    "images_per_s"]
                results[name][mode] = r
    finally:
        for child in children.values():
            child.close()
    machine["load_average_1m_end"] = measure.machine_info(device).get("load_average_1m")
    return {"settings": {k: v for k, v in vars(settings).items() if k != "extras"},
            "machine": machine, "results": results, **settings.extras}
