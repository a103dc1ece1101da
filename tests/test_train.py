"""Trainer: overfitting, bit-identical resume, checkpoint fallback, phase freezing,
recipes and config overrides. Tiny model (litevae-tiny), 32² crops, a few steps."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from latentae.engine.state import TrainState, load_latest, state_path
from latentae.errors import StateError, TrainingStopped
from latentae.registry import create_model
from latentae.train.autoencoder import set_trainable, train
from latentae.train.config import apply_overrides, make_config, resolve_recipe
from latentae.train.recipes import get_recipe, phase_lr, scale_steps


def smooth_images(folder: Path, n: int = 4, size: int = 32) -> Path:
    """``n`` smooth, distinct RGB images (sinusoids), PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        rgb = np.stack([np.sin(2 * np.pi * xx * (i + 1) / 2 + 0.1 * i),
                        np.cos(2 * np.pi * yy * (0.5 + 0.25 * i)),
                        np.sin(np.pi * (xx + yy) + i)], axis=-1)
        Image.fromarray(np.round(127.5 + 102 * rgb).astype(np.uint8)).save(folder / f"{i}.png")
    return folder


def tiny_config(tmp_path: Path, out: str, **kw):
    """Two phases of 3 steps, UNet discriminator from step 1, no LPIPS (speed)."""
    overrides = {"steps": 3, "resolution": 32, "batch_size": 2, "losses.perceptual": 0,
                 "disc_start": 1, "discriminator_channels": 8}
    overrides.update(kw.pop("overrides", {}))
    data = smooth_images(tmp_path / "data")
    base = dict(model="litevae-tiny", recipe="litevae", data=str(data), out=str(tmp_path / out),
                progress=False, log_every=1, ckpt_every=2, val_every=0,
                recipe_overrides=overrides)
    return make_config(base, kw)


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    return load_file(str(run / "model" / "model.safetensors"))


def assert_same_training(a: dict, b: dict) -> None:
    """Weights of two runs that should agree up to summation order (all-reduce,
    accumulation)."""
    # Adam turns a rounding difference in a near-zero gradient into an update of up to
    # lr (1e-4), so a few elements differ by that much. A real mismatch (other data,
    # other noise, unsynchronised gradients) moves most elements: measured 0.06% of
    # elements beyond 1e-6 for DDP here.
    n = sum(v.numel() for v in a.values())
    off = sum(int(((a[k] - b[k]).abs() > 1e-6).sum()) for k in a)
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert off / n < 0.005, f"{off} of {n} elements differ"
    assert worst < 1e-3, worst


def test_overfits_four_images(tmp_path):
    # 50 steps, batch 4, lr 4e-3, L1 + KL only: the EMA model must pass 14 dB PSNR on its
    # 4 training images (untrained litevae-tiny: 10.0 dB; measured 15.5 dB at step 50).
    cfg = tiny_config(tmp_path, "overfit", val_data=str(tmp_path / "data"), val_every=50,
                      ema_decay=0.9, recipe="sdvae", log_every=50,
                      overrides={"steps": 50, "batch_size": 4, "lr": 4e-3,
                                 "discriminator_on": False})
    train(cfg)
    records = [json.loads(line) for line in open(tmp_path / "overfit" / "metrics.jsonl")]
    psnr = [r["val_psnr"] for r in records if "val_psnr" in r]
    assert psnr and psnr[-1] > 14.0, psnr


def test_lr_schedule_reaches_both_optimizers(tmp_path):
    # --set warmup_steps=2 --set lr_decay=cosine: every step's logged lr, and the lr in
    # the generator's and discriminator's optimizers at the end, are phase_lr's.
    cfg = tiny_config(tmp_path, "sched", overrides={"lr": 1e-3, "warmup_steps": 2,
                                                    "lr_decay": "cosine"})
    train(cfg)
    records = [json.loads(line) for line in open(tmp_path / "sched" / "metrics.jsonl")]
    phases = resolve_recipe(cfg).phases
    expected = [phase_lr(p, s) for p in phases for s in range(p.steps)]
    assert [r["lr"] for r in records if "lr" in r] == pytest.approx(expected)
    assert expected[:3] == pytest.approx([5e-4, 7.5e-4, 2.5e-4])  # warm-up, then cosine
    state = load_latest(tmp_path / "sched" / "checkpoints")
    for opt in ("g_opt", "d_opt"):
        assert state[opt]["param_groups"][0]["lr"] == pytest.approx(expected[-1]), opt


def test_resume_is_bit_identical_and_skips_a_torn_checkpoint(tmp_path):
    # Two phases of 3 steps × 2 images: 12 images. Stopped after 4 steps (8 images, phase 2
    # after its first step), resumed past a newer torn file, it ends with the same weights.
    train(tiny_config(tmp_path, "full"))
    stopped = tiny_config(tmp_path, "split", max_steps=4)
    assert train(stopped) is None
    ckpts = tmp_path / "split" / "checkpoints"
    state = load_latest(ckpts)["state"]
    assert (state["phase"], state["phase_nimg"], state["nimg"]) == (1, 2, 8)
    torn = state_path(ckpts, 99)  # a newer, torn file must be skipped
    torn.write_bytes(state_path(ckpts, 8).read_bytes()[:1000])
    assert load_latest(ckpts)["state"]["nimg"] == 8
    train(tiny_config(tmp_path, "split", resume="auto"))
    a, b = final_weights(tmp_path / "full"), final_weights(tmp_path / "split")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa = torch.load(state_path(tmp_path / "full" / "checkpoints", 12), weights_only=True)
    sb = torch.load(state_path(ckpts, 12), weights_only=True)
    for k in sa["disc"]:
        assert torch.equal(sa["disc"][k], sb["disc"][k]), k
    assert sa["state"] == sb["state"]
    assert sa.keys() == {"format", "model", "disc", "g_opt", "d_opt", "ema", "state"}


def test_all_checkpoints_corrupt_is_an_error_naming_them(tmp_path, capsys):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "state-000000000001.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(StateError, match="state-000000000001.pt is unreadable"):
        load_latest(tmp_path / "c")
    assert "unreadable" in capsys.readouterr().err
    assert load_latest(tmp_path / "nothing-here") is None


def test_phase_freezing_keeps_other_parameters(tmp_path):
    cfg = tiny_config(tmp_path, "frozen", overrides={"train_groups": "decoder.head",
                                                     "discriminator_on": False})
    train(cfg)
    torch.manual_seed(cfg.seed)
    init = create_model("litevae-tiny")
    head = {id(p) for p in init.param_groups()["decoder.head"]}
    head_names = {n for n, p in init.named_parameters() if id(p) in head}
    trained = load_latest(tmp_path / "frozen" / "checkpoints")["model"]
    for name, p in init.named_parameters():
        if name in head_names:
            assert not torch.equal(p, trained[name]), f"{name} did not train"
        else:
            assert torch.equal(p, trained[name]), f"{name} changed outside the phase's groups"


def test_set_trainable_unknown_group():
    with pytest.raises(ValueError, match="decoder.head"):
        set_trainable(create_model("litevae-tiny"), ("decoder.nope",))


def test_recipes_match_the_papers():
    lite = get_recipe("litevae")
    assert [(p.steps, p.resolution) for p in lite.phases] == [(100_000, 128), (50_000, 256)]
    assert lite.discriminator == "unet" and not lite.phases[0].losses.adaptive
    p = lite.phases[0]
    assert (p.lr, p.betas, p.batch_size, p.optimizer) == (1e-4, (0.5, 0.9), 16, "adam")
    dc = get_recipe("dcae")
    assert [p.train_groups for p in dc.phases] == [
        ("all",), ("encoder.head.1", "decoder.input.1"), ("decoder.head.1",)]
    assert [(p.lr, p.weight_decay) for p in dc.phases[:2]] == [(6.4e-5, 0.1), (1.6e-5, 1e-3)]
    assert dc.phases[2].discriminator_on and dc.phases[2].betas == (0.5, 0.9)
    sd = get_recipe("sdvae").phases[0]
    assert sd.losses.adaptive and sd.losses.kl == 1e-6
    small = scale_steps(lite, 0.01)
    assert [(p.steps, p.disc_start) for p in small.phases] == [(1000, 500), (500, 0)]


def test_overrides_and_errors(tmp_path):
    r = apply_overrides(get_recipe("litevae"), {"lr": "2e-4", "p256.batch_size": "8",
                                                "losses.kl": 0, "betas": "0.9,0.99"})
    assert [p.lr for p in r.phases] == [2e-4, 2e-4]
    assert [p.batch_size for p in r.phases] == [16, 8]
    assert r.phases[0].losses.kl == 0.0 and r.phases[1].betas == (0.9, 0.99)
    with pytest.raises(ValueError, match="unknown field 'lrr'"):
        apply_overrides(r, {"lrr": 1})
    with pytest.raises(ValueError, match="unknown config key"):
        make_config({"data": "x", "modle": "a"})
    with pytest.raises(ValueError, match="--data"):
        make_config({})
    cfg = make_config({"data": "x", "steps_scale": "0.001", "recipe_overrides": {"steps": 2}})
    assert [p.steps for p in resolve_recipe(cfg).phases] == [2, 2]


def test_dcae_phases_train_only_their_groups(tmp_path):
    # DC-AE §3.2: phase 2 trains the encoder's head + the decoder's input layers, phase 3
    # only the decoder's head (with PatchGAN). One step per phase; a state per phase end.
    cfg = tiny_config(tmp_path, "dcae", model="dcae-tiny-f32", recipe="dcae",
                      keep_checkpoints=5, overrides={"steps": 1, "disc_start": 0})
    train(cfg)
    states = [torch.load(p, weights_only=True)["model"]
              for p in sorted((tmp_path / "dcae" / "checkpoints").glob("state-*.pt"))]
    assert len(states) == 3
    model = create_model("dcae-tiny-f32")
    groups = model.param_groups()
    names = {id(p): n for n, p in model.named_parameters()}
    phases = get_recipe("dcae").phases
    for before, after, trained in ((states[0], states[1], phases[1].train_groups),
                                   (states[1], states[2], phases[2].train_groups)):
        inside = {names[id(p)] for g in trained for p in groups[g]}
        for name in names.values():
            same = torch.equal(before[name], after[name])
            assert same != (name in inside), name
    # Frozen BatchNorm layers keep their running statistics (buffers) in phase 3 too.
    stats = [k for k in states[1]
             if "running_" in k and k.rsplit(".", 1)[0] + ".weight" not in inside]
    assert stats and all(torch.equal(states[1][k], states[2][k]) for k in stats)


def test_nan_guard_skips_counts_and_stops():
    from latentae.engine.loop import optimizer_step
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([w], lr=0.1)
    cfg, state = make_config({"data": "x", "max_bad_steps": 2}), TrainState()
    w.grad = torch.tensor([1.0, float("nan"), 0.0])
    assert not math.isfinite(optimizer_step(opt, [w], state, cfg, "G"))
    assert torch.equal(w.detach(), torch.ones(3)) and state.skipped == 1  # step skipped
    w.grad = torch.tensor([float("inf"), 0.0, 0.0])
    with pytest.raises(TrainingStopped, match="2 non-finite G steps in a row"):
        optimizer_step(opt, [w], state, cfg, "G")
    w.grad = torch.tensor([1.0, 0.0, 0.0])
    assert optimizer_step(opt, [w], state, cfg, "G") == 1.0 and state.bad_steps["G"] == 0


def test_cli_train_plot_shards(tmp_path, capsys):
    from latentae.cli import main
    data = smooth_images(tmp_path / "data")
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--recipe", "sdvae",
                 "--set", "steps=2", "--set", "resolution=32", "--set", "batch_size=2",
                 "--set", "losses.perceptual=0", "--set", "discriminator_on=false",
                 "--log-every", "1", "--no-progress"]) == 0
    assert (run / "model" / "config.json").is_file() and (run / "config.yaml").is_file()
    assert main(["plot", str(run)]) == 0 and (run / "curves.png").is_file()
    assert main(["shards", str(data), str(tmp_path / "shards"), "--size", "4KB"]) == 0
    from latentae.engine.data import list_sources
    assert len(list_sources(tmp_path / "shards")) == 4
    assert main(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "new")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_gradient_accumulation_matches_full_batch(tmp_path):
    kw = {"overrides": {"batch_size": 4, "steps": 2, "discriminator_on": False}}
    train(tiny_config(tmp_path, "acc1", **kw))
    train(tiny_config(tmp_path, "acc2", accumulation=2, **kw))
    a, b = final_weights(tmp_path / "acc1"), final_weights(tmp_path / "acc2")
    assert_same_training(a, b)


def test_sigterm_checkpoints_and_exits_zero(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    data = smooth_images(tmp_path / "data")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "latentae", "train", "--data", str(data), "--out", str(run),
           "--recipe", "sdvae", "--set", "steps=100000", "--set", "resolution=32",
           "--set", "batch_size=2", "--set", "losses.perceptual=0",
           "--set", "discriminator_on=false", "--log-every", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (run / "metrics.jsonl").is_file() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()
    state = load_latest(run / "checkpoints")
    assert state is not None and state["state"]["nimg"] >= 2


def test_adaptive_gan_weight_uses_the_models_last_layer(tmp_path, monkeypatch):
    # LiteVAE eq. 2 needs the gradients at the decoder's last layer: the step asks the
    # model (``last_layer()``, which every family provides), not its decoder's internals.
    from latentae.models.litevae import LiteVAE
    calls, original = [], LiteVAE.last_layer

    def last_layer(self):
        calls.append(type(self).__name__)
        return original(self)

    monkeypatch.setattr(LiteVAE, "last_layer", last_layer)
    cfg = tiny_config(tmp_path, "adaptive", recipe="sdvae",
                      overrides={"steps": 1, "disc_start": 0, "discriminator_channels": 8})
    train(cfg)
    record = json.loads((tmp_path / "adaptive" / "metrics.jsonl").read_text().splitlines()[0])
    assert calls == ["LiteVAE"] and record["adaptive_weight"] > 0


@pytest.mark.parametrize("family", ["dcae", "litevae-wavelet"])
def test_adaptive_gan_weight_trains_every_family(tmp_path, family):
    # Issue 13 §4: the adaptive weight used to reach for the SD-VAE decoder's conv_out,
    # so DC-AE and a wavelet-output LiteVAE crashed with an AttributeError.
    if family == "dcae":
        model = "dcae-tiny-f32"
    else:
        model = str(tmp_path / "wavelet-model")
        create_model("litevae-tiny", output="wavelet").save_pretrained(model)
    cfg = tiny_config(tmp_path, family, recipe="sdvae", model=model,
                      overrides={"steps": 2, "disc_start": 0, "discriminator_channels": 8})
    train(cfg)
    records = [json.loads(line) for line in
               (tmp_path / family / "metrics.jsonl").read_text().splitlines()]
    weights = [r["adaptive_weight"] for r in records if "adaptive_weight" in r]
    assert len(weights) == 2 and all(math.isfinite(w) and w > 0 for w in weights)


def test_cutmix_enters_the_discriminator_loss(tmp_path):
    # The CutMix term of the U-Net GAN (Schönfeld et al. §3.2) is part of the D loss when
    # losses.cutmix > 0: same data, same noise, a different D loss and D weights.
    def d_run(name, cutmix):
        cfg = tiny_config(tmp_path, name, recipe="sdvae", overrides={
            "steps": 1, "disc_start": 0, "discriminator_channels": 8,
            "discriminator": "unet", "losses.cutmix": cutmix, "losses.adaptive": False})
        train(cfg)
        return json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[0])
    off, on = d_run("off", 0.0), d_run("on", 1.0)
    assert off["loss"] == on["loss"]  # the generator step is untouched
    assert on["d_loss"] != off["d_loss"] and math.isfinite(on["d_loss"])
    with pytest.raises(ValueError, match="U-Net discriminator"):
        resolve_recipe(make_config({"model": "litevae-tiny", "recipe": "dcae", "data": "x",
                                    "out": str(tmp_path / "x"),
                                    "recipe_overrides": {"losses.cutmix": 1}}))
