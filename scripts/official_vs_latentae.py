"""latentae's DiT and U-ViT against the official code, same weights, one process.

Issue 29's table, diffusion rows. The official model is built with a fixed seed and given
random weights of a plausible scale (the releases' init zeroes DiT's adaLN and output
layers: every output would be 0), converted by ``latentae.diffusion.convert.load_official``
(``latentae diffusion convert``'s loader); outputs are compared, the repeats interleaved
(``latentae.bench.measure.interleave``). Ratio = official s / latentae s (> 1: latentae
faster). Rows (full sizes; ``--tiny``: 2 blocks of width 64 on small latents):

- ``dit-forward``: DiT-S/2 (facebookresearch/DiT ``models.py``), learned sigma, 4×32×32
  latents (256² images), class labels, batch 8.
- ``dit-train``: L_hybrid (MSE + VLB) + AdamW(lr 1e-4, wd 0) as DiT's ``train.py``:
  ``create_diffusion("").training_losses`` vs latentae's ``ddpm_loss_terms`` (what
  ``latentae diffusion train`` runs), same t and ε, batch 8.
- ``dit-sample``: DDPM 50 steps, guidance 4, batch 4: ``create_diffusion("50")
  .p_sample_loop(model.forward_with_cfg)`` as DiT's ``sample.py`` vs latentae's ``sample``
  (``ddpm``, ``guidance_channels=3``: the release's guidance arithmetic).
- ``uvit-forward`` / ``uvit-train``: UViT-S, patch 1 (efficientvit
  ``diffusioncore/models/uvit.py``, DC-AE's ``dc_ae_uvit_s_in_512px``: 32×16×16 latents),
  batch 8; train = forward + backward of the ε-MSE at fixed (x_t, n, ε) (the release
  draws n with numpy in its ``forward``). The official model gets ``use_checkpoint=False``
  (latentae does not recompute activations by default) and the SiT schedulers, which
  build on the CPU (its DPM-Solver one needs CUDA); no row uses them.

The official code is never part of this repository: ``--dit-repo`` / ``--efficientvit-repo``
(checkouts) and ``--timm`` / ``--einops`` (unpacked wheels; unneeded where importable) go
on ``sys.path`` at run time. efficientvit's package ``__init__`` files import the whole
library, so its parent packages are registered empty on the checkout's folders and only
``uvit.py`` and its own imports load. timm imports torchvision at import time; where that
is missing, :class:`_TorchvisionStub` stands in. For the sampling row's output comparison
only, the official loop's per-step noise (``torch.randn_like`` in ``p_sample``) is drawn
as latentae draws it; the timed calls are unpatched.

    python scripts/official_vs_latentae.py --dit-repo /tmp/official/DiT \\
        --efficientvit-repo /tmp/official/efficientvit --timm /tmp/timmlib \\
        --einops /tmp/einopslib --repeats 5 --threads 2 --out bench-official.json
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import statistics
import sys
import types
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import NamedTuple
from unittest import mock

import torch
from torch import nn

from latentae.bench.measure import interleave, machine_info, time_once
from latentae.bench.peers import peer_header, peer_parser, peer_row_names, peer_rows
from latentae.diffusion.convert import load_official
from latentae.diffusion.ddpm import ddpm_loss_terms
from latentae.diffusion.pipeline import model_call
from latentae.diffusion.samplers import sample

CPU = torch.device("cpu")
NUM_CLASSES, GUIDANCE = 1000, 4.0
# family -> (latentae preset, architecture, patch, latent channels, latent size, batch)
FULL = {"dit": ("dit-s", {"depth": 12, "hidden_size": 384, "num_heads": 6}, 2, 4, 32, 8),
        "uvit": ("uvit-s", {"depth": 12, "hidden_size": 512, "num_heads": 8}, 1, 32, 16, 8),
        "sample": (4, 50)}  # sampling: batch, steps
TINY = {"dit": ("dit-s", {"depth": 2, "hidden_size": 64, "num_heads": 2}, 2, 4, 8, 2),
        "uvit": ("uvit-s", {"depth": 2, "hidden_size": 64, "num_heads": 2}, 1, 32, 4, 2),
        "sample": (2, 5)}
_CLONE = "a checkout of {0}: git clone https://github.com/{0} DIR"
_WHEEL = "an unpacked {0} wheel: pip download --no-deps {0} && unzip {0}-*.whl -d DIR"
HINTS = {"--dit-repo": ("models.py", _CLONE.format("facebookresearch/DiT")),
         "--efficientvit-repo": ("efficientvit/diffusioncore/models/uvit.py",
                                 _CLONE.format("mit-han-lab/efficientvit")),
         "--timm": ("timm/__init__.py", _WHEEL.format("timm")),
         "--einops": ("einops/__init__.py", _WHEEL.format("einops"))}
Calls = dict[str, Callable[[], object]]


class Sources(NamedTuple):
    """The folders given: the DiT and efficientvit checkouts, the unpacked wheels."""

    dit: Path | None = None
    efficientvit: Path | None = None
    timm: Path | None = None
    einops: Path | None = None


# --- the official code, from the checkouts given ------------------------------------
class _Anything(type):
    """Any attribute of a stub is a (cached, hashable) class that takes any arguments."""

    def __getattr__(cls, name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        sub = _Anything(name, (cls,), {"__init__": lambda self, *a, **k: None})
        setattr(cls, name, sub)
        return sub


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        stub = _Anything(name, (), {"__init__": lambda self, *a, **k: None})
        setattr(self, name, stub)  # the same class at every access
        return stub


class _TorchvisionStub(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """timm's import-time torchvision references only; no torchvision code runs (the
    layers the releases use, Attention, Mlp, PatchEmbed, need none)."""

    def find_spec(self, name: str, path: object = None,
                  target: object = None) -> importlib.machinery.ModuleSpec | None:
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _StubModule(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        module.__path__ = []


def _on_path(flag: str, folder: Path | None, module: str | None = None) -> None:
    """Put ``folder`` on ``sys.path``; without it (and ``module`` not importable) exit with
    one line saying how to get it."""
    probe, hint = HINTS[flag]
    if folder is None and module is not None and importlib.util.find_spec(module):
        return
    if folder is None or not (folder / probe).is_file():
        where = "not given" if folder is None else f"{folder} has no {probe}"
        raise SystemExit(f"error: {flag} DIR is needed ({where}): {hint}")
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def _timm(src: Sources) -> None:
    _on_path("--timm", src.timm, "timm")
    if importlib.util.find_spec("torchvision") is None and not any(
            isinstance(f, _TorchvisionStub) for f in sys.meta_path):
        sys.meta_path.insert(0, _TorchvisionStub())


def load_dit(src: Sources) -> tuple[types.ModuleType, Callable]:
    """The DiT release's ``models`` module and ``diffusion.create_diffusion``."""
    _on_path("--dit-repo", src.dit)
    _timm(src)
    return importlib.import_module("models"), importlib.import_module("diffusion").create_diffusion


def load_uvit(src: Sources) -> types.ModuleType:
    """efficientvit's ``diffusioncore/models/uvit.py``, its parent packages empty."""
    _on_path("--efficientvit-repo", src.efficientvit)
    _timm(src)
    _on_path("--einops", src.einops, "einops")
    root = src.efficientvit / "efficientvit"
    for sub in ("", "apps", "apps.utils", "models", "models.utils", "diffusioncore",
                "diffusioncore.models"):
        name = "efficientvit" + ("." + sub if sub else "")
        if name not in sys.modules:
            pkg = types.ModuleType(name)
            pkg.__path__ = [str(root.joinpath(*sub.split(".")) if sub else root)]
            sys.modules[name] = pkg
    return importlib.import_module("efficientvit.diffusioncore.models.uvit")


def load_sources(names: list[str], src: Sources) -> None:
    """Load the official code the rows ``names`` need, before any is measured."""
    if any(n.startswith("dit") for n in names):
        load_dit(src)
    if any(n.startswith("uvit") for n in names):
        load_uvit(src)


# --- models and inputs -----------------------------------------------------------------
def _randomize(model: nn.Module, seed: int) -> None:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:  # DiT's fixed sin-cos position embedding is kept
                p.normal_(0, 0.02) if p.ndim > 1 else p.uniform_(-0.1, 0.1)


def _pair(family: str, src: Sources, size: dict, seed: int) -> tuple[nn.Module, nn.Module]:
    """(official model, latentae model from its weights)."""
    preset, arch, patch, ch, n, _ = size[family]
    torch.manual_seed(seed)
    if family == "dit":
        official = load_dit(src)[0].DiT(input_size=n, patch_size=patch, in_channels=ch,
                                        num_classes=NUM_CLASSES, learn_sigma=True, **arch)
    else:
        mod = load_uvit(src)
        cfg = mod.UViTConfig(input_size=n, patch_size=patch, in_channels=ch,
                             num_classes=NUM_CLASSES, use_checkpoint=False,
                             train_scheduler="SiTSampler", eval_scheduler="ODE_heun2", **arch)
        rank = {"RANK": os.environ.get("RANK", "0")}  # its is_master() reads torchrun's
        with contextlib.redirect_stdout(sys.stderr), mock.patch.dict(os.environ, rank):
            official = mod.UViT(cfg)  # (which prints its attention mode)
    _randomize(official, seed)
    ours = load_official(official.state_dict(), preset, patch_size=patch, input_size=n,
                         in_channels=ch, num_classes=NUM_CLASSES, **arch)
    return official.eval(), ours.eval()


def _inputs(family: str, size: dict, batch: int, seed: int) -> tuple[torch.Tensor, ...]:
    """x (B, C, N, N), timesteps (B,) int64 (DiT 0…999, U-ViT 1…1000), labels (B,),
    noise like x."""
    _, _, _, ch, n, _ = size[family]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, ch, n, n, generator=g)
    low = 1 if family == "uvit" else 0
    t = torch.randint(low, 1000 + low, (batch,), generator=g)
    return x, t, torch.randint(0, NUM_CLASSES, (batch,), generator=g), torch.randn_like(x)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.detach() - b.detach()).abs().max().item()


def _grad_diff(official: nn.Module, ours: nn.Module) -> float:
    """Max gradient difference over the parameters both name alike (all of them)."""
    grads = {k: p.grad for k, p in ours.named_parameters() if p.grad is not None}
    return max(_max_diff(p.grad, grads[k]) for k, p in official.named_parameters()
               if p.grad is not None)


# --- rows: each returns ({column: call}, max abs difference, what the work is) ---------
def _forward(family: str, src: Sources, size: dict, seed: int) -> tuple[Calls, float, str]:
    official, ours = _pair(family, src, size, seed)
    x, t, y, _ = _inputs(family, size, size[family][5], seed)
    fwd = official.forward if family == "dit" else official.forward_without_cfg

    def run(fn: Callable) -> Callable[[], torch.Tensor]:
        def call() -> torch.Tensor:
            with torch.no_grad():
                return fn(x, t, y)
        return call

    calls = {"latentae": run(ours), "official": run(fwd)}
    return calls, _max_diff(calls["latentae"](), calls["official"]()), "forward"


def _step(loss: Callable[[], torch.Tensor], model: nn.Module,
          opt: torch.optim.Optimizer | None) -> Callable[[], torch.Tensor]:
    def call() -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        value = loss()
        value.mean().backward()
        if opt is not None:
            opt.step()
        return value.detach()
    return call


def _train(family: str, optimize: bool, src: Sources, size: dict,
           seed: int) -> tuple[Calls, float, str]:
    """DiT: a step of L_hybrid + AdamW; U-ViT: forward + backward of the ε-MSE."""
    official, ours = _pair(family, src, size, seed)
    official.train(), ours.train()
    x, t, y, noise = _inputs(family, size, size[family][5], seed)
    fn = model_call(ours, "ddpm", CPU)
    if family == "dit":
        diffusion = load_dit(src)[1]("")
        off = lambda: diffusion.training_losses(official, x, t, {"y": y}, noise=noise)["loss"]  # noqa: E731
        mine = lambda: ddpm_loss_terms(fn, x, y, t, noise, learn_sigma=True)["loss"]  # noqa: E731
    else:  # x is x_t here: the networks alone, at fixed (x_t, n, ε)
        off = lambda: (noise - official.forward_without_cfg(x, t, y)).square().mean()  # noqa: E731
        mine = lambda: (noise - fn(x, t, y)).square().mean()  # noqa: E731
    opts = [torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4,
                              weight_decay=0) if optimize else None for m in (official, ours)]
    calls = {"latentae": _step(mine, ours, opts[1]), "official": _step(off, official, opts[0])}
    torch.manual_seed(seed)  # the same label-dropout draws on both sides
    theirs = calls["official"]()
    torch.manual_seed(seed)
    diff = max(_max_diff(calls["latentae"](), theirs), _grad_diff(official, ours))
    return calls, diff, "train step (L_hybrid + AdamW)" if optimize else "train fwd+bwd (ε-MSE)"


@contextlib.contextmanager
def _noise_as_latentae(g: torch.Generator, batch: int) -> Iterator[None]:
    """``torch.randn_like`` draws ``batch`` rows from ``g`` and repeats them (the null
    half of the official loop's doubled batch is discarded)."""
    real = torch.randn_like
    torch.randn_like = lambda x, *a, **k: torch.randn(  # type: ignore[assignment]
        (batch, *x.shape[1:]), generator=g, dtype=x.dtype).repeat(2, *[1] * (x.ndim - 1))
    try:
        yield
    finally:
        torch.randn_like = real  # type: ignore[assignment]


def _sample_calls(src: Sources, size: dict, seed: int) -> tuple[Calls, float, str]:
    official, ours = _pair("dit", src, size, seed)
    batch, steps = size["sample"]
    z, _, y, _ = _inputs("dit", size, batch, seed)
    diffusion = load_dit(src)[1](str(steps))
    z2, y2 = torch.cat([z, z]), torch.cat([y, torch.full_like(y, NUM_CLASSES)])
    kwargs = {"y": y2, "cfg_scale": GUIDANCE}

    def theirs() -> torch.Tensor:
        with torch.no_grad():
            return diffusion.p_sample_loop(official.forward_with_cfg, z2.shape, z2,
                                           clip_denoised=False, model_kwargs=kwargs,
                                           progress=False, device=CPU).chunk(2)[0]

    def mine(g: torch.Generator | None = None) -> torch.Tensor:
        return sample(model_call(ours, "ddpm", CPU), z.shape, objective="ddpm",
                      sampler="ddpm", steps=steps, guidance=GUIDANCE, labels=y,
                      null_label=NUM_CLASSES, learn_sigma=True, guidance_channels=3,
                      noise=z, generator=g)

    with _noise_as_latentae(torch.Generator().manual_seed(seed), batch):
        reference = theirs()
    diff = _max_diff(mine(torch.Generator().manual_seed(seed)), reference)
    return {"latentae": mine, "official": theirs}, diff, f"DDPM {steps} steps, CFG {GUIDANCE:g}"


ROWS: dict[str, Callable[[Sources, dict, int], tuple[Calls, float, str]]] = {
    "dit-forward": partial(_forward, "dit"), "dit-train": partial(_train, "dit", True),
    "dit-sample": _sample_calls, "uvit-forward": partial(_forward, "uvit"),
    "uvit-train": partial(_train, "uvit", False)}


# --- measuring and reporting ---------------------------------------------------------
def _model_name(family: str, size: dict) -> str:
    _, arch, patch, ch, n, _ = size[family]
    name = {"dit": "DiT", "uvit": "UViT"}[family]
    return f"{name} d{arch['depth']} w{arch['hidden_size']} p{patch}, {ch}×{n}×{n}"


def measure_row(name: str, src: Sources, size: dict, repeats: int, seed: int) -> dict:
    calls, diff, work = ROWS[name](src, size, seed)
    family = name.split("-")[0]
    batch = size["sample"][0] if name == "dit-sample" else size[family][5]
    for fn in calls.values():  # warm-up: one call each
        fn()
    timers = {k: ((lambda fn=fn: time_once(fn, CPU)), lambda: None) for k, fn in calls.items()}
    times, _ = interleave(timers, repeats,
                          progress=lambda m: print(f"{name}: {m}", file=sys.stderr))
    return summarize(name, f"{_model_name(family, size)} {work}", batch, times, diff)


def summarize(name: str, work: str, batch: int, times: dict[str, list[float]],
              diff: float) -> dict:
    """The row's record: seconds per repeat, ratio official / latentae (median, best)."""
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    return {"row": name, "work": work, "batch": batch, "seconds": times,
            "max_abs_diff": diff, "ratio_median": med["official"] / med["latentae"],
            "ratio_best": best["official"] / best["latentae"]}


def markdown(rows: list[dict], machine: dict, argv: list[str]) -> str:
    lines = [*peer_header("scripts/official_vs_latentae.py", argv, machine),
             "| row | work | batch | latentae s (median) | official s (median) | official / "
             "latentae, median (best) | max abs diff |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        med = {k: statistics.median(v) for k, v in r["seconds"].items()}
        lines.append(f"| {r['row']} | {r['work']} | {r['batch']} | {med['latentae']:.3f} | "
                     f"{med['official']:.3f} | **{r['ratio_median']:.2f}×** "
                     f"({r['ratio_best']:.2f}×) | {r['max_abs_diff']:.1e} |")
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    p = peer_parser(__doc__, ROWS)
    p.add_argument("--tiny", action="store_true",
                   help="a functional check at tiny sizes (2 blocks, width 64), not a measurement")
    for flag in HINTS:
        p.add_argument(flag, type=Path, default=None, metavar="DIR", help=HINTS[flag][1])
    return p


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    names = peer_row_names(p, args, ROWS)
    src = Sources(args.dit_repo, args.efficientvit_repo, args.timm, args.einops)
    size = TINY if args.tiny else FULL
    load_sources(names, src)
    machine = machine_info(CPU)
    machine.update(tiny=args.tiny, sources={k: str(v) for k, v in src._asdict().items() if v})
    argv = sys.argv[1:] if argv is None else argv
    return peer_rows(names, lambda n: measure_row(n, src, size, args.repeats, args.seed),
                     machine, lambda rows, m: markdown(rows, m, argv), args.out)


if __name__ == "__main__":
    sys.exit(main())
