"""Shared fixtures. Tests that need ../shared/data skip with the reason when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# One intra-op thread per test process: `make test` runs two pytest workers on two cores,
# and oversubscribed threads make tiny models ~100x slower.
torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout (bsds400-train, kodak24, lpips-examples)."""
    d = SHARED / "data"
    if not d.is_dir():
        pytest.skip(f"{d} is absent: the shared data folder must sit beside the checkout")
    return d


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def fetched() -> Path:
    """The metric network weights cache; fetched once if missing (``make test`` fetches
    before pytest), skipped with the reason if that is impossible."""
    from latentae import weights
    if any(s != "ok" for s in weights.verify().values()):
        try:
            weights.fetch(log=lambda *a: None)
        except ValueError as e:
            pytest.skip(f"metric weights are not cached and `latentae weights fetch` failed: {e}")
    return weights.cache_dir()
