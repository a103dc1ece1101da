"""DDP with gloo and 2 CPU processes gives the weights of 1 process with the same global
batch (generator and UNet discriminator, KL sampling, 2 phases)."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))
from test_train import assert_same_training, final_weights, tiny_config  # noqa: E402

from latentae.engine.state import load_latest  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, tmp: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from latentae.engine import dist
    from latentae.train.autoencoder import train
    try:
        train(tiny_config(Path(tmp), "ddp", overrides={"batch_size": 2, "steps": 2}))
    finally:
        dist.destroy()


@pytest.mark.slow
def test_ddp_gloo_two_processes_match_one(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available in this build")
    torch.set_num_threads(1)
    from latentae.train.autoencoder import train
    train(tiny_config(tmp_path, "single", overrides={"batch_size": 2, "steps": 2}))
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    one, two = final_weights(tmp_path / "single"), final_weights(tmp_path / "ddp")
    assert one.keys() == two.keys()
    assert_same_training(one, two)
    d1, d2 = (load_latest(tmp_path / r / "checkpoints")["disc"] for r in ("single", "ddp"))
    assert_same_training(d1, d2)
