"""What a run reports, for any model kind: ``metrics.jsonl`` + TensorBoard scalars
(rank 0), and reading the log back. (Autoencoder validation is in ``validation.py``.)"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from latentae.errors import InputError
from latentae.files import atomic_write_text, disk_error


class MetricsLog:
    """Appends one JSON object per record to ``run/metrics.jsonl`` and mirrors numeric
    values to TensorBoard (``run/tb``, x-axis ``step``) when the package is available.
    A resumed run passes the state it resumed: later records (written after that state
    by the interrupted process) are dropped from both, so no step appears twice."""

    def __init__(self, run: Path, tensorboard: bool = True, after_nimg: int = 0,
                 after_step: int = 0) -> None:
        self.path = run / "metrics.jsonl"
        if self.path.is_file():
            kept = [r for r in read_metrics(run) if r.get("nimg", 0) <= after_nimg]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(run / "tb"), purge_step=after_step + 1)
            except ImportError:  # tensorboard is a dependency; a broken install only warns
                print("warning: tensorboard unavailable; metrics go to metrics.jsonl only")

    def write(self, record: dict[str, Any]) -> None:
        record = {"time": round(time.time(), 3), **record}
        try:
            with open(self.path, "a") as f:  # an append; a torn last line is skipped on read
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise disk_error(e, self.path) from e
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "time"):
                    self.tb.add_scalar(k, v, record["step"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(run: str | Path) -> list[dict[str, Any]]:
    """Records of ``run/metrics.jsonl`` (a torn last line, from a kill, is ignored)."""
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        raise InputError(f"{path} does not exist: is {run} a latentae training run?")
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
