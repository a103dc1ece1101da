"""The generic training loop, in the shape of edm2's ``training_loop``, for any model kind.

:func:`training_loop` reads top to bottom: open the run folder (refuse, overwrite or
resume: ``rundir.py``), build the task, restore the newest valid state, then for each
phase ``task.begin_phase`` and one loop whose body is ``task.step`` + the EMA update,
with reports, validation and checkpoints when ``state.phase_nimg`` crosses their
interval; at the end validation and export. This module knows nothing of autoencoders:
the run folder, config file, metrics log (JSONL + TensorBoard), checkpoints with
retention, EMA, DDP (``dist.py``), SIGINT/SIGTERM, time and image limits, the progress
bar, the non-finite-gradient guard and the phase loop are here for every model kind.

**A task** is what a model kind supplies (:class:`Task`; ``train.autoencoder.AutoencoderTask``
and ``diffusion.train.DiffusionTask`` are two, ``tests/test_train_generic.py`` trains a
linear regression as a third)::

    phases: Sequence[PhaseSpec]   each with .name, .steps, .batch_size (per process)
    model: nn.Module              the trained network, unwrapped; the loop keeps its EMA
    resume_keys: tuple[str, ...]  top-level keys of config() a resumed run must match
    resume_defaults: dict         optional: fields added to the config later -> the value
                                  runs had before them (an old run folder still resumes)
    resume_renames: dict          optional: old field name -> new, for the same reason
    summary() -> str              optional: the resolved settings, printed at the start
    config() -> dict              the resolved configuration, YAML-able (OUT/config.yaml)
    begin_phase(index) -> None    make phase `index` current: trainable parameters, NEW
                                  optimizers (a checkpoint holds the current phase's), DDP
    batches(index, start) -> Iterator
                                  this process's batches of phase `index`, forever, from
                                  image `start` of the phase's global stream
    step(batch, state) -> dict[str, float]
                                  one training step: forward, backward, each optimizer
                                  through optimizer_step(); returns the values to log
    checkpoint_items() -> dict[str, Stateful]
                                  its modules and the current optimizers, by name
    validate(ema, state, folder) -> dict[str, float]
                                  every process calls it; logged as val_<name>
    export(ema, folder) -> Path   every process calls it: write the final model on rank 0
                                  (dist.is_main()), return its path everywhere

``make_task(device)`` builds the task after the run folder was accepted and
``torch.manual_seed(cfg.seed)`` was set (the same initial weights on every process).

**Units.** The loop counts images over all processes (``TrainState.nimg``,
``phase_nimg``); a phase is ``steps × batch_size × processes`` images, where a
``PhaseSpec.batch_size`` is per process (a task divides its global batch, the one users
set, by the number of processes). The step-valued
settings (``log_every``, ``val_every``, ``ckpt_every``, ``max_steps``) are converted to
images in one place, :func:`images`; ``max_images`` is given in images. 0 turns an
interval off; the end-of-phase checkpoint and the end-of-run validation still happen.

**Determinism.** Seeds derive from (seed, phase, image index): a task seeds its noise
with ``seed_from(seed, state.phase, state.phase_nimg, purpose)``, and the global torch
RNG is reseeded before every step from (seed, nimg, rank), so incidental randomness
(dropout, label dropout) also repeats. A resumed run equals an uninterrupted one bit for
bit (CPU, same thread count).

**Stopping.** SIGTERM, SIGINT (Ctrl-C), ``max_minutes`` and ``max_steps``/``max_images``
stop after the current step with a checkpoint and a line saying how to resume;
``training_loop`` then returns ``None``, or after SIGINT raises ``KeyboardInterrupt``
(``latentae train`` exits 130). A second Ctrl-C aborts at once, and so does a SIGTERM
before this process's first step (nothing to save; the first batch may wait minutes in a
read). The non-finite guard raises :class:`~latentae.errors.TrainingStopped`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from latentae import progress
from latentae.devices import resolve_device
from latentae.engine import dist
from latentae.engine.config import LoopConfig
from latentae.engine.ema import EMA
from latentae.engine.monitor import MetricsLog
from latentae.engine.rundir import RunFolder
from latentae.engine.stages import stage
from latentae.engine.state import Stateful, TrainState, restore, save, seed_from
from latentae.errors import TrainingStopped

__all__ = ["PhaseSpec", "Task", "TrainState", "images", "optimizer_step", "training_loop"]


class PhaseSpec(Protocol):
    name: str
    steps: int  # optimizer steps
    batch_size: int  # samples per step and process


class Task(Protocol):
    """What a model kind supplies to :func:`training_loop` (see the module docstring)."""

    phases: Sequence[PhaseSpec]
    model: nn.Module
    resume_keys: tuple[str, ...]

    def config(self) -> dict[str, Any]: ...

    def begin_phase(self, index: int) -> None: ...

    def batches(self, index: int, start: int) -> Iterator[Any]: ...

    def step(self, batch: Any, state: TrainState) -> dict[str, float]: ...

    def checkpoint_items(self) -> dict[str, Stateful]: ...

    def validate(self, ema: nn.Module, state: TrainState, folder: Path) -> dict[str, float]: ...

    def export(self, ema: nn.Module, folder: Path) -> Path: ...


def images(steps: int, phase: PhaseSpec) -> int:
    """The one conversion from steps (how intervals and phase lengths are given) to the
    loop's unit: a step of ``phase`` is its ``batch_size`` on each process."""
    return steps * phase.batch_size * dist.world_size()


def global_step(phases: Sequence[PhaseSpec], state: TrainState) -> int:
    """Optimizer steps so far (for logs and plots; the loop itself counts images)."""
    done = sum(p.steps for p in phases[:state.phase])
    return done + state.phase_nimg // images(1, phases[state.phase])


class StopSignals:
    """SIGTERM and SIGINT ask for a stop after the current step; a second SIGINT aborts
    at once (``KeyboardInterrupt``); a SIGTERM before this process's first step ends it at
    once (nothing to save). Installed only in the main thread."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.stepped = False  # set by the loop after this process's first step
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if signum == signal.SIGTERM and not self.stepped:
            # The first batch may wait minutes in a read (gsutil's retries for a gs://
            # shard without a network, sweep WD14) and there is nothing to save: end now,
            # as SIGTERM's default does (exit status 143).
            dist.print0("\nSIGTERM before the first step: nothing to save; stopping now",
                        file=sys.stderr)
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: abort now, no checkpoint
        self.received = signum
        dist.print0(f"\n{signal.Signals(signum).name}: stopping after this step with a "
                    "checkpoint (Ctrl-C again aborts at once)")


def optimizer_step(opt: torch.optim.Optimizer, params: Iterable[nn.Parameter],
                   state: TrainState, cfg: LoopConfig, tag: str) -> float:
    """Clip the gradients of ``params`` to ``cfg.grad_clip``, then step ``opt`` -- unless
    their norm is not finite: then skip the step, count it, and after ``max_bad_steps``
    in a row raise :class:`TrainingStopped`. Returns the norm (gradients must already be
    all-reduced, so every process decides alike)."""
    params = [p for p in params if p.grad is not None]
    clip = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
    norm = float(torch.nn.utils.clip_grad_norm_(params, clip)) if params else 0.0
    if math.isfinite(norm):
        opt.step()
        state.bad_steps[tag] = 0
        return norm
    state.bad_steps[tag] = state.bad_steps.get(tag, 0) + 1
    state.skipped += 1
    opt.zero_grad(set_to_none=True)
    if state.bad_steps[tag] >= cfg.max_bad_steps:
        raise TrainingStopped(
            f"{state.bad_steps[tag]} non-finite {tag} steps in a row at image {state.nimg} "
            f"(phase {state.phase}): lower the learning rate, raise grad_clip, or check "
            "the data")
    return norm


@dataclasses.dataclass(frozen=True)
class Session:
    """The long-lived objects of one :func:`training_loop` call (counters: ``state``)."""

    cfg: LoopConfig
    task: Task
    ema: EMA
    state: TrainState
    folder: RunFolder
    log: MetricsLog | None
    signals: StopSignals
    device: torch.device
    start_time: float
    start_nimg: int  # where this process started
    max_nimg: int  # images this process may train (0: no limit)


def checkpoint_items(s: Session) -> dict[str, Stateful]:
    """The one list of what a checkpoint holds; :func:`save` and :func:`restore` both
    walk it. The task's modules come first, so a model mismatch is what is reported."""
    return {**s.task.checkpoint_items(), "ema": s.ema, "state": s.state}


def save_checkpoint(s: Session) -> None:
    """Write the training state (rank 0) and wait for it on every process."""
    if dist.is_main():
        save(s.folder.checkpoints, checkpoint_items(s), s.state.nimg, s.cfg.keep_checkpoints)
    dist.barrier()


def limit_reached(s: Session) -> bool:
    """A limit of this process is reached. The time limit waits for the first step (a
    run stopped before it would have no checkpoint: nothing to resume or export)."""
    cfg, trained = s.cfg, s.state.nimg - s.start_nimg
    return (bool(cfg.max_minutes) and trained > 0
            and time.time() - s.start_time > 60 * cfg.max_minutes
            or bool(s.max_nimg) and trained >= s.max_nimg)


def due(s: Session, every_steps: int) -> bool:
    """``phase_nimg`` is at a multiple of the interval (0: never)."""
    every = images(every_steps, s.task.phases[s.state.phase])
    return bool(every) and s.state.phase_nimg % every == 0


class Window:
    """Running means of the logged values since the last report."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.steps, self.t0 = 0, time.time()

    def add(self, logs: dict[str, float]) -> None:
        for k, v in logs.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
            self.counts[k] = self.counts.get(k, 0) + 1
        self.steps += 1

    def mean(self) -> dict[str, float]:
        return {k: self.sums[k] / self.counts[k] for k in sorted(self.sums)}


def report(s: Session, window: Window, bar: Any) -> None:
    """The window's means to the progress bar and the metrics log."""
    mean, phase, st = window.mean(), s.task.phases[s.state.phase], s.state
    img_s = images(window.steps, phase) / max(time.time() - window.t0, 1e-9)
    bar.set_postfix(loss=f"{mean.get('loss', 0):.4f}", img_s=f"{img_s:.1f}")
    if s.log is not None:
        s.log.write({"step": global_step(s.task.phases, st), "nimg": st.nimg,
                     "phase": phase.name, "phase_nimg": st.phase_nimg,
                     "img_s": round(img_s, 3), "skipped_steps": st.skipped,
                     "corrupt_files": st.corrupt, "small_files": st.small, **mean})


def validate(s: Session) -> None:
    """The task's validation of the EMA model: logged, and one line on the console."""
    metrics = s.task.validate(s.ema.model, s.state, s.folder.path)
    step = global_step(s.task.phases, s.state)
    if metrics and s.log is not None:
        s.log.write({"step": step, "nimg": s.state.nimg,
                     **{f"val_{k}": v for k, v in metrics.items()}})
    if metrics:
        values = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                           for k, v in metrics.items())
        dist.print0(f"validation at step {step} ({s.task.phases[s.state.phase].name}, "
                    f"image {s.state.nimg}, EMA model): {values}")


def run_hooks(s: Session) -> None:
    """A task's optional periodic hooks, ``task.periodic() -> [(every_steps, hook)]`` with
    ``hook(ema, state, folder) -> values`` (e.g. the autoencoder's diffusability
    diagnostics and generation probe), each logged under its own names when due."""
    for every, hook in getattr(s.task, "periodic", list)():
        if due(s, every):
            values = hook(s.ema.model, s.state, s.folder.path)
            if values and s.log is not None:
                s.log.write({"step": global_step(s.task.phases, s.state),
                             "nimg": s.state.nimg, **values})


def run_phase(s: Session) -> bool:
    """Train the current phase from ``state.phase_nimg`` to its end (``True``) or to a
    stop (``False``): the edm2 loop, reporting and saving before each step."""
    st, phase = s.state, s.task.phases[s.state.phase]
    total, per_step, start, window = images(phase.steps, phase), images(1, phase), st.nimg, Window()
    batches = s.task.batches(st.phase, st.phase_nimg)
    bar = progress.bar(total=total, initial=st.phase_nimg, desc=phase.name, unit="img",
                       unit_scale=True, enabled=s.cfg.progress and dist.is_main())
    while True:
        finished = st.phase_nimg >= total
        stopping = not finished and dist.any_true(
            s.signals.received is not None or limit_reached(s), s.device)
        if st.nimg != start:  # nothing to report or save before this process's first step
            if finished or stopping or due(s, s.cfg.log_every):
                report(s, window, bar)
                window = Window()
            if due(s, s.cfg.val_every):
                validate(s)
            run_hooks(s)
            if finished or stopping or due(s, s.cfg.ckpt_every):
                save_checkpoint(s)
        if finished or stopping:
            bar.close()
            return finished
        torch.manual_seed(seed_from(s.cfg.seed, st.nimg, dist.rank()))  # see Determinism
        with stage("data"):
            batch = next(batches)
        window.add(s.task.step(batch, st))
        s.signals.stepped = True
        with stage("ema"):
            s.ema.update(s.task.model)
        st.phase_nimg, st.nimg = st.phase_nimg + per_step, st.nimg + per_step
        bar.update(per_step)


def stopped(s: Session) -> None:
    """Say that the run paused (not failed), where, and how to continue or use it;
    re-raise a Ctrl-C."""
    newest = s.folder.newest_checkpoint()
    where = f"checkpoint {newest}" if newest else "no checkpoint yet (nothing trained)"
    total = sum(p.steps for p in s.task.phases)
    why = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}.get(
        s.signals.received, "the --max-minutes / --max-steps / --max-images limit")
    dist.print0(f"paused ({why}), not finished: step {global_step(s.task.phases, s.state)} "
                f"of {total}, image {s.state.nimg}, phase {s.task.phases[s.state.phase].name}; "
                f"{where}. Continue with the same command and --resume auto"
                + (f"; its EMA model now: `latentae export {s.folder.path} OUT`"
                   if newest else ""))
    if s.signals.received == signal.SIGINT:
        raise KeyboardInterrupt


def training_loop(cfg: LoopConfig, make_task: Callable[[torch.device], Task]) -> Path | None:
    """Train (or with ``resume="auto"`` continue) ``make_task(device)`` through its
    phases. Returns the exported model's path, or ``None`` when stopped early after a
    checkpoint (see the module docstring for SIGINT)."""
    dist.init()
    folder, device = RunFolder(cfg.out), resolve_device(cfg.device)
    saved = folder.open(cfg, device)  # refuse a reused folder, or the state to resume
    torch.manual_seed(cfg.seed)  # the same initial weights on every process
    task, state = make_task(device), TrainState()
    ema = EMA(task.model, cfg.ema_decay)
    if saved is not None:  # which phase to build; everything is restored after that
        state.load_state_dict(saved["state"])
    folder.write_config(task.config(), saved is not None, task.resume_keys,
                        getattr(task, "resume_defaults", {}),
                        getattr(task, "resume_renames", {}))
    log = folder.metrics_log(state.nimg, global_step(task.phases, state))
    dist.print0(f"{'resuming' if saved is not None else 'new'} run in {folder.path}"
                + (f" at image {state.nimg}" if saved is not None else "")
                + (f"\n{task.summary()}" if hasattr(task, "summary") else ""))
    with StopSignals() as signals:
        max_nimg = cfg.max_images or images(cfg.max_steps, task.phases[state.phase])
        s = Session(cfg, task, ema, state, folder, log, signals, device, time.time(),
                    state.nimg, max_nimg)
        try:
            return train_phases(s, saved)
        except TrainingStopped as e:
            newest = folder.newest_checkpoint()
            raise TrainingStopped(f"{e}; the newest checkpoint is " + (
                f"{newest}" if newest else "none (none was written)")) from None
        finally:
            if log is not None:
                log.close()


def train_phases(s: Session, saved: dict[str, Any] | None) -> Path | None:
    """The phase loop: build, restore once (the optimizers of the phase it stopped in
    exist only after ``begin_phase``), train; then validate and export."""
    while s.state.phase < len(s.task.phases):
        s.task.begin_phase(s.state.phase)
        if saved is not None:
            restore(saved, checkpoint_items(s))
            saved = None
        if not run_phase(s):
            stopped(s)
            return None
        if s.state.phase + 1 == len(s.task.phases):
            break
        s.state.phase, s.state.phase_nimg = s.state.phase + 1, 0
    if not (due(s, s.cfg.val_every) and s.state.nimg != s.start_nimg):  # not just done
        validate(s)
    out = s.task.export(s.ema.model, s.folder.path)
    st = s.state
    dist.print0(f"finished: exported the EMA model to {out} ({global_step(s.task.phases, st)} "
                f"steps, {st.nimg} images, {st.skipped} skipped steps, {st.corrupt} corrupt "
                f"and {st.small} small files skipped)")
    dist.barrier()
    return out
