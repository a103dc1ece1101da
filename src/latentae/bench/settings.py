"""The one settings record of both bench kinds (autoencoder columns, ``runner.py``;
diffusion columns, ``diffusion_columns.py``): what every timed run shares: image size,
batch, dtype, device, warm-up and repeats, seed, ``torch.compile`` backend and the size
of the matmul that measures the machine. Each kind adds its own fields (keyword-only)
and checks; every field is recorded in the report."""

from __future__ import annotations

from dataclasses import dataclass

from latentae.errors import InputError
from latentae.runtime import COMPILE_BACKENDS, DTYPES


@dataclass
class Settings:
    """What a timed bench run shares, whatever its columns."""

    resolution: int = 256
    batch: int = 4
    dtype: str = "float32"
    device: str = "cpu"
    warmup: int = 1
    repeats: int = 3
    seed: int = 0
    compile: str | None = None  # torch.compile backend of the timed calls (None: eager)
    matmul_size: int = 1536  # n of the n×n matmul that measures the machine's rate

    @property
    def dtypes(self) -> list[str]:
        """The dtype, or each of several comma-separated ones (one column each)."""
        return [d for d in self.dtype.split(",") if d]

    def check(self) -> None:
        """Raise :class:`InputError` naming the first bad shared value."""
        bad = [d for d in self.dtypes if d not in DTYPES]
        if bad or not self.dtypes:
            raise InputError(f"unknown dtype(s) {bad}; valid: {', '.join(DTYPES)}")
        for k in ("resolution", "batch", "repeats", "matmul_size"):
            if getattr(self, k) < 1:
                raise InputError(f"{k} must be >= 1, got {getattr(self, k)}")
        if self.warmup < 0:
            raise InputError(f"warmup must be >= 0, got {self.warmup}")
        if self.compile is not None and self.compile not in COMPILE_BACKENDS:
            raise InputError(f"unknown compile backend {self.compile!r}; valid: "
                             f"{', '.join(COMPILE_BACKENDS)}")
