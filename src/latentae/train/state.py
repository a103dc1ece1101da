"""Training state checkpoints (the state a run needs, STYLE §5): one file per save,
``OUT/checkpoints/state-<step>.pt``, written to a temporary name and renamed (atomic),
the last ``keep`` kept. Loaded with ``torch.load(weights_only=True)``: tensors, numbers,
strings, lists and dicts only, no pickled classes. A torn or corrupt newest file is
reported and the previous one used."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch

PATTERN = "state-*.pt"
REQUIRED = ("model", "ema", "g_opt", "phase", "step", "global_step")


def state_path(folder: Path, global_step: int) -> Path:
    return folder / f"state-{global_step:09d}.pt"


def save_state(folder: str | os.PathLike, state: dict[str, Any], keep: int = 3) -> Path:
    """Write ``state`` atomically as ``state-<global_step>.pt`` and delete all but the
    newest ``keep`` state files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = state_path(folder, int(state["global_step"]))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    for old in sorted(folder.glob(PATTERN))[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_latest(folder: str | os.PathLike, map_location: str | torch.device = "cpu"
                ) -> dict[str, Any] | None:
    """The newest readable state in ``folder`` (``None`` if there is none). Files that
    fail to load or lack required keys are reported on stderr and skipped."""
    folder = Path(folder)
    for path in sorted(folder.glob(PATTERN), reverse=True):
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:  # torn zip, truncated file, bad pickle: try the previous
            print(f"warning: checkpoint {path} is unreadable ({type(e).__name__}: {e}); "
                  "falling back to the previous one", file=sys.stderr)
            continue
        missing = [k for k in REQUIRED if not isinstance(state, dict) or k not in state]
        if missing:
            print(f"warning: checkpoint {path} lacks {missing}; falling back",
                  file=sys.stderr)
            continue
        state["path"] = str(path)
        return state
    return None


def rng_state() -> dict[str, Any]:
    """CPU and CUDA RNG states (the loop reseeds from (seed, step), so these are kept
    for completeness rather than needed for bit-identical resume)."""
    out = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
