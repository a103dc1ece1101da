"""The run folder and the rules for reusing one (any model kind).

    OUT/config.yaml        the resolved configuration (a resumed run must match it)
    OUT/metrics.jsonl      one JSON record per report; OUT/tb/ the same for TensorBoard
    OUT/samples/           what validation draws
    OUT/checkpoints/       training states (``state.py``)
    OUT/model/             the exported model

A folder that holds a run (a state file, the exported model or logged steps) is reused
only on purpose: ``--resume auto`` continues it from the newest readable state (a
:class:`~latentae.errors.StateError` if it has states but none is readable, unless
``--restart``, which then starts over); ``--overwrite`` deletes the old run's files first;
anything else is refused. The ``config.yaml`` of a start that failed before its first step
is no run: the next start replaces it. A resumed run's log is cut back to the resumed
state, so no step appears twice. Writes happen on rank 0; every process takes the same
decisions.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from latentae.engine import dist
from latentae.engine.config import LoopConfig
from latentae.engine.monitor import MetricsLog
from latentae.engine.state import list_states, load_latest, remove_temporaries
from latentae.errors import InputError, StateError
from latentae.files import atomic_write_text, check_inputs_apart
from latentae.locks import lock_folder

RUN_FILES = ("config.yaml", "metrics.jsonl", "tb", "samples", "checkpoints", "model")


class RunFolder:
    """``OUT`` of one run: paths, the reuse rules, the config file and the metrics log."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.samples = self.path / "samples"

    def holds_run(self) -> bool:
        """A run with something to lose: a checkpoint, an exported model or a logged
        record. The config.yaml (and empty tb/) of a start that failed before its first
        step (no usable image) is none: its retry is not refused (sweep T16b)."""
        log = self.path / "metrics.jsonl"
        return (bool(list_states(self.checkpoints)) or (self.path / "model").exists()
                or (log.is_file() and log.stat().st_size > 0))

    def failed_start(self) -> bool:
        """What a start that failed before its first step leaves (``holds_run`` is not)."""
        return (self.path / "config.yaml").is_file() and not self.holds_run()

    def clear(self) -> None:
        """Delete what a run writes (and nothing else a user keeps in the folder)."""
        for name in RUN_FILES:
            p = self.path / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()

    def open(self, cfg: LoopConfig, device: torch.device) -> dict[str, Any] | None:
        """Apply the reuse rules; return the newest readable state to resume from, or
        ``None`` for a new run. The folder exists afterwards."""
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"--out {self.path} is a file: pass a folder for the run")
        if dist.is_main():  # one process per run folder (issue 28)
            lock_folder(self.path)
        saved, clear = None, False
        if cfg.resume == "auto":
            try:
                saved = load_latest(self.checkpoints, device)
            except StateError as e:
                if not cfg.restart:
                    raise StateError(f"{e}. Nothing was changed; `--resume auto --restart` "
                                     "starts the run over (deleting its files, as "
                                     "--overwrite does)") from e
                dist.print0(f"note: {e}; starting over (--restart)", file=sys.stderr)
                clear = True
            if saved is None and not clear:
                dist.print0(f"note: no checkpoint in {self.checkpoints}: a new run")
            elif saved is not None:  # say where (a fallback past unreadable files shows)
                dist.print0(f"resuming from {saved['path']}", file=sys.stderr)
        elif self.holds_run():
            if not cfg.overwrite:
                raise StateError(f"{self.path} holds a run (checkpoints, a model or logged "
                                 "steps): continue it with --resume auto, delete it and "
                                 "start over with --overwrite, or choose another --out")
            clear = True
        elif self.failed_start():
            dist.print0(f"note: {self.path} holds a run that stopped before its first step: "
                        "starting it over")
            clear = True
        if clear:  # refused before anything is deleted
            check_inputs_apart(self.path, run_inputs(cfg), [self.path / n for n in RUN_FILES])
        if dist.is_main():
            if clear:
                self.clear()
            remove_temporaries(self.checkpoints)  # a glob: nothing when absent
        # nothing is created here: a start that fails before write_config (bad data, a
        # bad model) leaves no empty folders behind (state.save makes checkpoints/)
        dist.barrier()
        return saved

    def write_config(self, doc: dict[str, Any], resuming: bool, keys: tuple[str, ...],
                     added: dict[str, Any] | None = None,
                     renamed: dict[str, str] | None = None) -> None:
        """Save ``doc`` as ``config.yaml`` (rank 0). When resuming, the saved file must
        agree on every top-level key in ``keys`` (e.g. ``"recipe"``), fields introduced
        later (``added``: name -> the value runs had before, from the task) aside, and
        fields renamed since (``renamed``: old name -> new) read under their new name."""
        path = self.path / "config.yaml"
        if resuming and path.is_file():
            old = with_names(yaml.safe_load(path.read_text()) or {}, renamed or {})
            differ = [k for k in keys if not agrees(old.get(k), doc.get(k), added or {})]
            if differ:
                fields = [f for k in differ for f in _differing(k, old.get(k), doc.get(k))]
                raise StateError(f"the {', '.join(differ)} differs from the one in {path} "
                                 f"({'; '.join(fields[:4])}): resume with the same options, "
                                 "or start a new run with another --out")
        if dist.is_main():
            self.path.mkdir(parents=True, exist_ok=True)  # the run really starts here
            atomic_write_text(path, yaml.safe_dump(doc, sort_keys=False))

    def metrics_log(self, resumed_nimg: int, resumed_step: int) -> MetricsLog | None:
        """The metrics log (rank 0; ``None`` elsewhere), cut back to the resumed state."""
        if not dist.is_main():
            return None
        return MetricsLog(self.path, after_nimg=resumed_nimg, after_step=resumed_step)

    def newest_checkpoint(self) -> Path | None:
        """The state written last (by time: after a fallback past an unreadable newer
        file, the one this run wrote, not that file)."""
        states = list_states(self.checkpoints)
        return max((p for _, p in states), key=lambda p: p.stat().st_mtime_ns,
                   default=None)


def _differing(name: str, old: Any, new: Any) -> list[str]:
    """``"name.field: OLD (saved) vs NEW"`` for each leaf where two documents differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [f for k in sorted(set(old) | set(new), key=str)
                for f in _differing(f"{name}.{k}", old.get(k), new.get(k))]
    return [] if old == new else [f"{name}: {old!r} (saved) vs {new!r}"]


def run_inputs(cfg: Any) -> list[str]:
    """The paths a run reads (model, autoencoder, data ...), which ``--overwrite`` must
    not delete."""
    names = ("model", "autoencoder", "data", "val_data", "reference_data")
    return [str(v) for n in names if isinstance(v := getattr(cfg, n, None), str) and v]


def with_names(doc: Any, renamed: dict[str, str]) -> Any:
    """``doc`` with every mapping key that ``renamed`` names replaced by its new name."""
    if isinstance(doc, dict):
        return {renamed.get(k, k): with_names(v, renamed) for k, v in doc.items()}
    if isinstance(doc, list):
        return [with_names(v, renamed) for v in doc]
    return doc


def agrees(old: Any, new: Any, added: dict[str, Any]) -> bool:
    """``old`` (a saved config document) equals ``new``, except that a key that ``old``
    lacks and ``added`` names (a field introduced later) agrees when ``new`` holds the
    value runs had before the field existed: old run folders keep resuming."""
    if isinstance(old, dict) and isinstance(new, dict):
        return all(agrees(old[k], v, added) if k in old
                   else k in added and v == added[k] for k, v in new.items()) \
            and old.keys() <= new.keys()
    if isinstance(old, list) and isinstance(new, list):
        return len(old) == len(new) and all(agrees(a, b, added) for a, b in zip(old, new))
    return old == new
