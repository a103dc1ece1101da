"""The generic loop trains a task that is not an autoencoder: a linear regression with
its own model, optimizer, batches and step, through the run folder, metrics log,
checkpoints, EMA and resume of ``latentae.engine.loop`` (the plug-in a diffusion trainer
uses). The other training tests reuse :class:`Regression` as a fast task."""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from latentae.engine import dist
from latentae.engine.ema import EMA
from latentae.engine.loop import optimizer_step, training_loop
from latentae.engine.state import TrainState, load_latest, restore, seed_from
from latentae.errors import StateError
from latentae.files import atomic_write
from latentae.train.config import LoopConfig

TRUE_W = torch.tensor([[1.5], [-2.0], [0.5]])  # (3, 1)


@dataclasses.dataclass(frozen=True)
class Phase:
    name: str
    steps: int
    batch_size: int
    lr: float


class Regression:
    """Fit ``y = x·w + 0.5 + noise`` with one ``nn.Linear`` and SGD with momentum (new
    per phase). The step also draws from the global RNG (a random loss scale, as dropout
    would), which the loop's per-step reseeding makes repeatable."""

    resume_keys = ("phases",)

    def __init__(self, cfg: LoopConfig, device: torch.device, nan_from: int | None = None):
        self.cfg, self.device, self.nan_from = cfg, device, nan_from
        self.phases = (Phase("fast", 5, 4, 0.1), Phase("slow", 4, 2, 0.02))
        self.model = nn.Linear(3, 1).to(device)
        self.opt: torch.optim.Optimizer | None = None

    def config(self) -> dict:
        return {"train": dataclasses.asdict(self.cfg),
                "phases": [dataclasses.asdict(p) for p in self.phases]}

    def begin_phase(self, index: int) -> None:
        self.opt = torch.optim.SGD(self.model.parameters(), lr=self.phases[index].lr,
                                   momentum=0.9)

    def batches(self, index: int, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        b = self.phases[index].batch_size  # one process: positions start, start + b, …
        for pos in itertools.count(start, b):
            g = torch.Generator().manual_seed(seed_from(self.cfg.seed, index, pos))
            x = torch.randn(b, 3, generator=g)
            yield x, x @ TRUE_W + 0.5 + 0.01 * torch.randn(b, 1, generator=g)

    def step(self, batch: tuple[torch.Tensor, torch.Tensor], state: TrainState) -> dict:
        x, y = batch
        self.opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(self.model(x), y) * (0.5 + torch.rand(()))
        if self.nan_from is not None and state.nimg >= self.nan_from:
            loss = loss * float("nan")
        loss.backward()
        norm = optimizer_step(self.opt, self.model.parameters(), state, self.cfg, "fit")
        return {"loss": float(loss.detach()), "grad_norm": norm}

    def checkpoint_items(self) -> dict:
        return {"model": self.model, "opt": self.opt}

    def validate(self, ema: nn.Module, state: TrainState, folder: Path) -> dict:
        return {"w_error": float((ema.weight.T - TRUE_W).abs().max())}

    def export(self, ema: nn.Module, folder: Path) -> Path:
        path = folder / "regression.pt"
        if dist.is_main():
            with atomic_write(path) as f:
                torch.save(ema.state_dict(), f)
        return path


def regression_config(tmp_path: Path, out: str = "run", **kw) -> LoopConfig:
    base = dict(out=str(tmp_path / out), log_every=1, ckpt_every=2, val_every=3,
                progress=False, ema_decay=0.9, device="cpu")
    return LoopConfig(**{**base, **kw})


def fit(cfg: LoopConfig, **task_kw) -> Path | None:
    return training_loop(cfg, lambda device: Regression(cfg, device, **task_kw))


def test_a_regression_task_trains_and_resumes_bit_identically(tmp_path):
    # 5 steps × 4 + 4 steps × 2 = 28 images. Split at 12 (inside phase 1) and at 22
    # (phase 2, after its first step), each resume from a checkpoint of the last.
    full = fit(regression_config(tmp_path, "full"))
    assert fit(regression_config(tmp_path, "split", max_images=12)) is None
    assert fit(regression_config(tmp_path, "split", max_images=10, resume="auto")) is None
    state = load_latest(tmp_path / "split" / "checkpoints")["state"]
    assert (state["phase"], state["phase_nimg"], state["nimg"]) == (1, 2, 22)
    split = fit(regression_config(tmp_path, "split", resume="auto"))
    a, b = torch.load(full, weights_only=True), torch.load(split, weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = (load_latest(tmp_path / r / "checkpoints") for r in ("full", "split"))
    assert sa["state"] == sb["state"] and sa["state"]["nimg"] == 28
    assert all(torch.equal(sa["opt"]["state"][i]["momentum_buffer"],
                           sb["opt"]["state"][i]["momentum_buffer"]) for i in (0, 1))
    records = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").open()]
    val = [r["val_w_error"] for r in records if "val_w_error" in r]
    assert len(val) >= 2 and val[-1] < val[0]  # it learns
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == list(range(1, 10))  # one record per step, no step twice after resumes
    resumed = [json.loads(x) for x in (tmp_path / "split" / "metrics.jsonl").open()]
    assert [r["step"] for r in resumed if "loss" in r] == steps


def test_a_checkpoint_holds_exactly_the_one_key_list(tmp_path):
    fit(regression_config(tmp_path, max_images=8))
    saved = load_latest(tmp_path / "run" / "checkpoints")
    assert set(saved) == {"format", "path", "model", "opt", "ema", "state"}
    task = Regression(regression_config(tmp_path), torch.device("cpu"))
    task.begin_phase(0)
    with pytest.raises(StateError, match=r"holds \['ema', 'model', 'opt', 'state'\]"):
        restore(saved, {"model": task.model, "state": TrainState()})  # "opt", "ema" missing
    other = {"model": nn.Linear(4, 1), "opt": task.opt, "ema": EMA(task.model),
             "state": TrainState()}
    with pytest.raises(StateError, match="does not fit this Linear"):
        restore(saved, other)


def test_the_generic_loop_imports_nothing_of_autoencoders():
    """What ``engine/loop.py`` reaches through its imports (read from the source; the
    package's ``__init__``, which offers ``latentae.load`` of every kind, aside)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_imports import import_graph

    graph, seen, todo = import_graph(), set(), ["latentae.engine.loop"]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += sorted(graph[name] - {"latentae"})
    assert {"latentae.engine.state", "latentae.engine.rundir"} <= seen
    bad = sorted(m for m in seen if m.startswith(("latentae.train", "latentae.losses",
                                                  "latentae.eval", "latentae.diffusion",
                                                  "latentae.engine.data")))
    assert not bad, bad


def test_the_run_folder_holds_the_tasks_config_and_export(tmp_path):
    out = fit(regression_config(tmp_path))
    assert out == tmp_path / "run" / "regression.pt" and out.is_file()
    assert list(yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())) == [
        "train", "phases"]
    assert not list((tmp_path / "run" / "checkpoints").glob(".*"))  # no temporaries
