"""Diffusion training on latents: it learns, resumes bit for bit, and cached and on-the-fly
data agree (tiny DiT, litevae-tiny, CPU). DDP 2 processes = 1: test_diffusion_cli.py
(through torchrun, as the docs show it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from diffusion_helpers import exported, run, save_autoencoder, tiny_config, write_images  # noqa: E402

from latentae.cli import main  # noqa: E402
from latentae.diffusion.data import latent_batches, open_training_data  # noqa: E402
from latentae.diffusion.recipes import RECIPES, warmup_lr  # noqa: E402
from latentae.diffusion.train import enable_block_checkpointing  # noqa: E402
from latentae.engine.state import load_latest  # noqa: E402
from latentae.latents import shard_metadata, write_shard  # noqa: E402
from latentae.pretrained import load as load_pretrained  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dtrain")
    return save_autoencoder(root / "ae"), write_images(root / "images")


def toy_shards(folder: Path, autoencoder: Path, n: int = 16) -> Path:
    """Cached latents of two classes: two fixed (4, 4, 4) patterns plus a little noise."""
    g = torch.Generator().manual_seed(0)
    patterns = torch.randn(2, 4, 4, 4, generator=g)
    latents = {f"c{i % 2}/{i}.png": patterns[i % 2] + 0.05 * torch.randn(4, 4, 4, generator=g)
               for i in range(n)}
    meta = shard_metadata(load_pretrained(autoencoder), str(autoencoder), False, "mode",
                          ["c0", "c1"])
    folder.mkdir()
    write_shard(folder / "latents-00000.safetensors", latents, dict.fromkeys(latents, (32, 32)),
                meta, {k: int(k[1]) for k in latents})
    return folder


def losses(run_dir: Path, key: str = "loss") -> list[float]:
    return [r[key] for r in map(json.loads, (run_dir / "metrics.jsonl").open()) if key in r]


# Measured over seeds 0-2: ddpm mse 0.70 -> 0.27, flow loss 2.05 -> 1.49 (it starts at
# E|ε - x|² = 2: the zero-initialised output layer predicts v = 0).
@pytest.mark.parametrize("objective, ratio", [("ddpm", 0.6), ("flow", 0.85)])
def test_a_tiny_dit_learns_toy_latents(tmp_path, setup, objective, ratio):
    ae, _ = setup
    data = toy_shards(tmp_path / "toy", ae)
    run(tmp_path / "run", ae, data, cached=True, objective=objective, steps=50, batch_size=8,
        latent_norm="model", lr=2e-3, ckpt_every=0)
    loss = losses(tmp_path / "run", "mse" if objective == "ddpm" else "loss")
    first, last = sum(loss[:10]) / 10, sum(loss[-10:]) / 10
    assert last < ratio * first, (first, last)  # ε-/velocity-prediction error falls


def test_resume_is_bit_identical(tmp_path, setup):
    # On-the-fly encoding with posterior draws, label dropout, warm-up and per-channel
    # statistics (read back from config.yaml on resume): stop after 3 of 6 steps, resume.
    ae, images = setup
    kw = dict(latent_norm="channel", warmup_steps=4, posterior="sample")
    run(tmp_path / "full", ae, images, **kw)
    assert run(tmp_path / "split", ae, images, max_steps=3, **kw) is None
    assert not (tmp_path / "split" / "model").exists()
    run(tmp_path / "split", ae, images, resume="auto", **kw)
    a, b = exported(tmp_path / "full"), exported(tmp_path / "split")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = (load_latest(tmp_path / r / "checkpoints") for r in ("full", "split"))
    assert sa["state"] == sb["state"] and sa["state"]["nimg"] == 24
    assert all(torch.equal(sa["opt"]["state"][i]["exp_avg_sq"], sb["opt"]["state"][i][
        "exp_avg_sq"]) for i in sa["opt"]["state"])
    assert losses(tmp_path / "full") == losses(tmp_path / "split")
    record = json.loads((tmp_path / "split" / "model" / "diffusion_run.json").read_text())
    assert record["classes"] == ["cats", "dogs"] and record["latent_norm"]["kind"] == "channel"
    assert (tmp_path / "full" / "samples" / "step-00000006.png").is_file()


def test_cached_and_on_the_fly_data_give_the_same_batch(tmp_path, setup):
    ae, images = setup
    assert main(["encode", str(ae), str(images), str(tmp_path / "shards"), "--labels",
                 "--shard-size", "4", "--apply-scaling"]) == 0
    model = load_pretrained(ae)
    kw = dict(batch=4, rank=0, world=1, posterior="mode", seed=5, device=torch.device("cpu"))
    fly = open_training_data(tiny_config(tmp_path / "a", ae, images, crop="center",
                                         flip=False, seed=5), model)
    cached = open_training_data(tiny_config(tmp_path / "b", ae, tmp_path / "shards",
                                            cached=True, seed=5), model)
    assert fly.classes == cached.classes == ["cats", "dogs"]
    a, b = latent_batches(fly, model, start=8, **kw), latent_batches(cached, model, start=8, **kw)
    for _ in range(3):  # positions 8 … 19: the second and third epoch of 6 images
        (za, ya, _, _), (zb, yb, _, _) = next(a), next(b)
        torch.testing.assert_close(za, zb, atol=1e-5, rtol=1e-5)
        assert torch.equal(ya, yb)
    other = open_training_data(tiny_config(tmp_path / "c", ae, images, crop="center",
                                           flip=False, seed=6), model)
    zc, _, _, _ = next(latent_batches(other, model, start=8, **{**kw, "seed": 6}))
    assert not torch.allclose(zc, za)  # another seed, another order: the test can fail


def test_gradient_checkpointing_keeps_the_gradients(setup):
    from latentae.diffusion import create_diffusion
    for name in ("dit-tiny", "uvit-s"):
        torch.manual_seed(0)
        kw = dict(patch_size=1, in_channels=4, input_size=4, num_classes=3)
        if name == "uvit-s":
            kw.update(depth=2, hidden_size=32, num_heads=2)
        model = create_diffusion(name, **kw).double()
        x, t, y = torch.randn(2, 4, 4, 4).double(), torch.tensor([3, 500]), torch.tensor([0, 3])
        model(x, t, y).square().mean().backward()
        ref = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        model.zero_grad()
        assert enable_block_checkpointing(model) == (4 if name == "dit-tiny" else 3)
        model(x, t, y).square().mean().backward()
        got = [p.grad for p in model.parameters() if p.grad is not None]
        assert all(torch.allclose(a, b) for a, b in zip(ref, got, strict=True))


def test_recipes_are_the_releases_and_warmup_is_linear():
    dit, uvit = RECIPES["dit"], RECIPES["uvit"]
    assert (dit.lr, dit.batch_size, dit.weight_decay, dit.warmup_steps, dit.ema_decay) == (
        1e-4, 256, 0.0, 0, 0.9999)
    assert (uvit.lr, uvit.batch_size, uvit.weight_decay, uvit.betas, uvit.warmup_steps) == (
        2e-4, 1024, 0.03, (0.99, 0.99), 5000)
    assert [warmup_lr(2e-4, 4, k) for k in range(5)] == pytest.approx([5e-5, 1e-4, 1.5e-4,
                                                                      2e-4, 2e-4])
    cfg = tiny_config(Path("x"), Path("ae"), Path("d"), model="uvit-s", batch_size=None,
                      lr=None)
    assert (cfg.recipe, cfg.lr, cfg.batch_size, cfg.warmup_steps) == ("uvit", 2e-4, 1024, 5000)
