"""Training state: the progress record, the one list of what a checkpoint holds, and the
checkpoint files ``OUT/checkpoints/state-<nimg>.pt``.

- :class:`TrainState`: the loop's only counters, progress counted in images over all
  processes as edm2 counts ``cur_nimg``.
- A checkpoint is a dict ``name -> object with state_dict()/load_state_dict()`` (the
  task's modules and optimizers, the EMA, the ``TrainState``; the loop builds it in
  ``loop.checkpoint_items``). :func:`save` and :func:`restore` walk that same dict, so
  every key written is read back and nothing read was never written. No RNG state is
  saved: all randomness derives from (seed, phase, image index).
- Files are named by the images their state has seen, written with
  :func:`latentae.files.atomic_write` (a reader sees the old file or the new one; a full
  disk is a :class:`~latentae.errors.DiskFullError` and leaves no temporary), and
  retention deletes only files older than the one just written, so the newest valid
  state is never lost. Loaded with ``torch.load(weights_only=True)``: tensors, numbers,
  strings, lists and dicts, no pickled classes. A torn or foreign newest file is reported
  and the previous one used; if none is readable, :class:`~latentae.errors.StateError`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import sys
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from latentae.errors import StateError
from latentae.files import atomic_write, disk_error

FORMAT = "latentae-train-state/2"  # /1 (before images were the unit) named files by step
NAME = re.compile(r"state-(\d+)\.pt")
META = ("format", "path")  # keys of a loaded file that are not checkpoint items


def seed_from(*values: int) -> int:
    """A 63-bit seed from integers, the same in every process (unlike ``hash`` of str):
    e.g. ``seed_from(cfg.seed, state.phase, state.phase_nimg, purpose)``."""
    digest = hashlib.sha256(repr(tuple(int(v) for v in values)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class Stateful(Protocol):
    """What a checkpoint item is: a module, an optimizer, the EMA, the TrainState."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


@dataclasses.dataclass
class TrainState:
    """Progress of a run. Images are counted over all processes (one step of a phase adds
    its ``batch_size × processes``); ``phase_nimg`` drives the phase's intervals, seeds
    and the sampler's start position."""

    phase: int = 0  # index of the current phase
    phase_nimg: int = 0  # images trained in the current phase
    nimg: int = 0  # images trained in all phases
    skipped: int = 0  # optimizer steps skipped as non-finite
    corrupt: int = 0  # source files skipped as undecodable (counted by the task's data)
    small: int = 0  # source files skipped as smaller than the crop
    bad_steps: dict[str, int] = dataclasses.field(default_factory=dict)  # in a row, per tag

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        names = [f.name for f in dataclasses.fields(self)]
        if sorted(state) != sorted(names):
            raise StateError(f"the saved training state has fields {sorted(state)}, "
                             f"expected {sorted(names)}")
        for name in names:
            setattr(self, name, state[name])


def state_path(folder: Path, nimg: int) -> Path:
    return folder / f"state-{nimg:012d}.pt"


def list_states(folder: Path) -> list[tuple[int, Path]]:
    """``(nimg, path)`` of every state file in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = ((NAME.fullmatch(p.name), p) for p in folder.iterdir())
    return sorted((int(m.group(1)), p) for m, p in found if m)


def save(folder: Path, items: dict[str, Stateful], nimg: int, keep: int) -> Path:
    """Write ``items``' state dicts as ``state-<nimg>.pt``, then delete all but the
    ``keep - 1`` newest of the *older* files (never a newer one, never this one)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = state_path(folder, nimg)
    write_state(path, {"format": FORMAT, **{k: v.state_dict() for k, v in items.items()}})
    older = [p for n, p in list_states(folder) if n < nimg]
    for old in older[:max(0, len(older) - (keep - 1))]:
        old.unlink(missing_ok=True)
    return path


def write_state(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` into :func:`atomic_write`. torch reports a failed write of its zip
    writer as a ``RuntimeError`` whose context is the ``OSError`` (a full disk gives
    "enforce fail at inline_container.cc"); that is turned back into the disk error."""
    needed = _nbytes(state)
    try:
        with atomic_write(path, "wb", needed=needed) as f:
            torch.save(state, f)
    except RuntimeError as e:
        if not isinstance(e.__context__, OSError):
            raise
        raise disk_error(e.__context__, path, needed) from e


def _nbytes(x: Any) -> int:
    """Tensor bytes in a nested state (the size of the file, near enough)."""
    if isinstance(x, torch.Tensor):
        return x.numel() * x.element_size()
    if isinstance(x, dict):
        return sum(_nbytes(v) for v in x.values())
    if isinstance(x, (list, tuple)):
        return sum(_nbytes(v) for v in x)
    return 0


def read_state(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """One state file, checked to be this format; ``StateError`` saying why not."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torn zip, truncated file, not a torch file at all
        raise StateError(f"{path} is unreadable ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:160] if str(e) else ''})") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format", "none (an older latentae)") if isinstance(
            state, dict) else type(state).__name__
        raise StateError(f"{path} is not a {FORMAT} training state (format {found})")
    return {**state, "path": str(path)}


def load_latest(folder: str | os.PathLike, map_location: str | torch.device = "cpu"
                ) -> dict[str, Any] | None:
    """The newest readable state in ``folder``; ``None`` if it holds no state file.
    Unreadable files are reported on stderr and skipped; if every one is unreadable,
    :class:`StateError` naming them."""
    reasons = []
    for _, path in reversed(list_states(Path(folder))):
        try:
            return read_state(path, map_location)
        except StateError as e:
            reasons.append(str(e))
            print(f"warning: {e}; trying the previous checkpoint", file=sys.stderr)
    if reasons:
        raise StateError(f"no readable checkpoint in {folder}: " + "; ".join(reasons))
    return None


def restore(saved: dict[str, Any], items: dict[str, Stateful]) -> None:
    """Load every item from ``saved`` (a :func:`read_state` dict); the names must be the
    same, a module's tensors must fit, else a one-line :class:`StateError`."""
    path, held = saved["path"], sorted(k for k in saved if k not in META)
    if held != sorted(items):
        raise StateError(f"{path} holds {held} but this run saves {sorted(items)}: it "
                         "was written by another kind of run; start a new run with "
                         "another --out")
    for name, obj in items.items():
        if isinstance(obj, nn.Module):
            _check_fits(obj, saved[name], name, path)
        try:
            obj.load_state_dict(saved[name])
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            raise StateError(f"{path}: the saved {name!r} does not fit this run ({first}); "
                             "resume with the options the run was started with (see "
                             "its config.yaml) or start a new run with another --out") from e


def _check_fits(module: nn.Module, saved: dict[str, Any], name: str, path: str) -> None:
    own = module.state_dict()
    missing, unexpected = own.keys() - saved.keys(), saved.keys() - own.keys()
    shapes = [k for k in own.keys() & saved.keys()
              if getattr(own[k], "shape", None) != getattr(saved[k], "shape", None)]
    if missing or unexpected or shapes:
        raise StateError(
            f"{path}: the saved {name!r} does not fit this {type(module).__name__} "
            f"({len(missing)} tensors missing, {len(unexpected)} unexpected, {len(shapes)} "
            "of another shape): was the run started with another --model? Resume with "
            "the run's own --model (see its config.yaml) or start a new run with another "
            "--out")


def remove_temporaries(folder: Path) -> None:
    """Delete temporaries a killed writer left (``.state-*.tmp``; ``state-*.pt.tmp``
    from before the atomic writer), which can hold gigabytes of a full disk."""
    for pattern in (".state-*.tmp", "state-*.pt.tmp"):
        for p in folder.glob(pattern):
            p.unlink(missing_ok=True)
