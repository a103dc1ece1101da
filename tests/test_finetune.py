"""Fine-tuning a diffusers AutoencoderKL: the frozen encoder stays bit-identical, the
regression report, export back to diffusers, the discriminator saved and loaded back.
Both styles: SD 1.x/2.x/SDXL (4 channels, quant convs) and SD3/FLUX (16 channels, no
quant convs, shift factor), random-initialised at tiny widths, a few steps each."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
from diffusers import AutoencoderKL
from PIL import Image

import latentae
from latentae.cli import main
from latentae.errors import InputError
from latentae.train.autoencoder import AutoencoderTask, train
from latentae.train.config import make_config, resolve_recipe
from latentae.train.discriminator import load_discriminator
from latentae.train.regression import paired_bootstrap, verdict

STYLES = {
    "sd": dict(latent_channels=4),  # use_quant_conv / use_post_quant_conv default True
    "flux": dict(latent_channels=16, use_quant_conv=False, use_post_quant_conv=False,
                 scaling_factor=0.3611, shift_factor=0.1159),
}
TINY = {"resolution": 32, "batch_size": 2, "steps": 4, "disc_warmup": 2,
        "discriminator_channels": 8, "losses.perceptual": 0}
ENCODER_SIDE = ("encoder.", "quant_conv.")  # SDVAE.param_groups()["encoder"]


def sinusoid_images(folder: Path, n: int, seed: int, size: int = 40) -> Path:
    """``n`` smooth random RGB images (PNG)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        f, ph = rng.uniform(0.5, 3, 3), rng.uniform(0, 6, 3)
        rgb = np.stack([np.sin(2 * np.pi * f[0] * xx + ph[0]),
                        np.cos(2 * np.pi * f[1] * yy + ph[1]),
                        np.sin(np.pi * f[2] * (xx + yy) + ph[2])], axis=-1)
        Image.fromarray(np.round(127.5 + 100 * rgb).astype(np.uint8)).save(folder / f"{i}.png")
    return folder


def diffusers_vae(path: Path, style: str) -> Path:
    """A random-initialised tiny ``AutoencoderKL`` of ``style``, saved with diffusers."""
    torch.manual_seed(0)
    AutoencoderKL(block_out_channels=(32, 64), layers_per_block=1,
                  down_block_types=["DownEncoderBlock2D"] * 2,
                  up_block_types=["UpDecoderBlock2D"] * 2, **STYLES[style]).save_pretrained(path)
    return path


def finetune_config(root: Path, style: str, recipe: str = "finetune-decoder",
                    with_val: bool = True, **kw):
    base = dict(model=str(diffusers_vae(root / f"vae-{style}", style)), recipe=recipe,
                data=str(sinusoid_images(root / "domain", 6, 0)),
                val_data=str(sinusoid_images(root / "val", 4, 1)),
                reference_data=str(sinusoid_images(root / "general", 6, 2)),
                out=str(root / f"run-{style}-{recipe}"), progress=False, val_every=0,
                recipe_overrides={**TINY, **kw.pop("overrides", {})})
    if not with_val:
        del base["val_data"]
    return make_config(base, kw)


@pytest.fixture(scope="module", params=sorted(STYLES))
def finetuned(request, tmp_path_factory):
    """``(style, config, exported model dir)`` of one finetune-decoder run per style."""
    cfg = finetune_config(tmp_path_factory.mktemp(request.param), request.param,
                          overrides={"lr": 1e-3})
    return request.param, cfg, train(cfg)


def test_finetune_decoder_keeps_the_encoder_and_the_latents_bit_identical(finetuned):
    style, cfg, out = finetuned
    before, after = latentae.load(cfg.model).eval(), latentae.load(out).eval()
    a, b = before.state_dict(), after.state_dict()
    encoder = [k for k in a if k.startswith(ENCODER_SIDE)]
    assert encoder and all(torch.equal(a[k], b[k]) for k in encoder)
    decoder = [k for k in a if not k.startswith(ENCODER_SIDE)]
    assert any(not torch.equal(a[k], b[k]) for k in decoder), "the decoder did not train"
    if style == "sd":  # post_quant_conv is on the decoder side and trains
        assert not torch.equal(a["post_quant_conv.weight"], b["post_quant_conv.weight"])
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(before.encode(x).mean, after.encode(x).mean)
        assert torch.equal(before.encode(x).logvar, after.encode(x).logvar)


def test_regression_report_has_deltas_and_pictures_on_both_sets(finetuned):
    _, cfg, out = finetuned
    run = out.parent
    doc = json.loads((run / "regression.json").read_text())
    assert set(doc["sets"]) == {"validation", "reference"}
    for name, result in doc["sets"].items():
        assert result["latent_max_abs_diff"] == 0
        for metric in ("psnr", "ssim", "lpips"):
            m = result["metrics"][metric]
            # 4 and 6 images: below MIN_CI_IMAGES, so no interval
            assert m["ci_low"] == m["ci_high"] == "nan", (metric, m)
            assert m["delta"] == pytest.approx(m["after"] - m["before"], abs=1e-9)
        grid = Image.open(run / f"regression_{name}.png")  # image | before | after
        n = min(result["images"], 6)
        assert result["grid"] == f"regression_{name}.png"
        assert grid.size[0] >= 3 * 32 and grid.size[1] >= n * 32
    assert doc["regressed"] == (doc["sets"]["reference"]["metrics"]["psnr"]["delta"] < -0.1)
    md = (run / "regression.md").read_text()
    assert "## reference" in md and "paired bootstrap" in md and "PSNR (dB)" in md
    assert "(regression_reference.png)" in md and "— (< 10 images)" in md
    assert "95% CI [" not in doc["summary"] and "n = 6: no interval" in doc["summary"]


def test_a_bootstrap_interval_needs_ten_images():
    g = torch.Generator().manual_seed(0)
    before = torch.randn(10, generator=g, dtype=torch.float64)
    assert paired_bootstrap(before, before + 1)["ci_low"] == pytest.approx(1.0)
    few = paired_bootstrap(before[:9], before[:9] + 1)
    assert few["delta"] == pytest.approx(1.0) and few["n"] == 9 and math.isnan(few["ci_low"])


def test_export_loads_in_diffusers_with_equal_outputs(finetuned, tmp_path):
    style, _, out = finetuned
    assert main(["export", str(out), "--format", "diffusers", str(tmp_path / "d")]) == 0
    vae = AutoencoderKL.from_pretrained(tmp_path / "d").eval()
    assert vae.config.latent_channels == STYLES[style]["latent_channels"]
    assert vae.config.use_quant_conv == (style == "sd")
    assert (vae.config.shift_factor or 0.0) == STYLES[style].get("shift_factor", 0.0)
    ours, x = latentae.load(out).eval(), torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mode()
        torch.testing.assert_close(z, ours.encode(x).mode(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(vae.decode(z).sample, ours.decode(z), atol=1e-5, rtol=1e-5)


def test_discriminator_is_exported_and_loads_back(finetuned):
    _, cfg, out = finetuned
    folder = out / "discriminator"
    assert json.loads((folder / "config.json").read_text())["kind"] == "patchgan"
    recipe = resolve_recipe(cfg)
    again = dataclasses.replace(cfg, init_discriminator=str(folder))
    task = AutoencoderTask(again, recipe, torch.device("cpu"))
    saved = latentae.serialization.read_weights(folder / "model.safetensors")
    assert saved.keys() == task.disc.state_dict().keys()
    assert all(torch.equal(saved[k], v) for k, v in task.disc.state_dict().items())
    wider = dataclasses.replace(recipe, discriminator_channels=16)
    with pytest.raises(InputError, match="discriminator_channels=8"):
        load_discriminator(task.disc, wider, folder)


def test_finetune_full_moves_the_encoder(tmp_path):
    cfg = finetune_config(tmp_path, "sd", "finetune-full", overrides={"lr": 1e-3, "steps": 2})
    out = train(cfg)
    a, b = latentae.load(cfg.model).state_dict(), latentae.load(out).state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("encoder."))
    doc = json.loads((out.parent / "regression.json").read_text())
    assert doc["sets"]["reference"]["latent_max_abs_diff"] > 0


def test_a_wrecked_decoder_is_flagged(tmp_path):
    # lr 0.05 for 4 steps destroys the decoder: the reference PSNR must fall past 0.1 dB.
    cfg = finetune_config(tmp_path, "sd", overrides={"lr": 0.05}, with_val=False)
    train(cfg)
    doc = json.loads((Path(cfg.out) / "regression.json").read_text())
    assert set(doc["sets"]) == {"reference"}
    assert doc["regressed"] and "worse than the tolerance" in doc["summary"]


def test_paired_bootstrap_matches_scipy_and_closed_forms():
    g = torch.Generator().manual_seed(1)
    before = torch.randn(400, generator=g, dtype=torch.float64)
    after = before + 0.3 + 0.5 * torch.randn(400, generator=g, dtype=torch.float64)
    ours = paired_bootstrap(before, after)
    d = (after - before).numpy()
    ref = scipy.stats.bootstrap((d,), np.mean, n_resamples=2000, method="percentile",
                                random_state=0).confidence_interval
    assert ours["delta"] == pytest.approx(d.mean())
    width = ref.high - ref.low  # resampling noise: a few % of the width
    assert abs(ours["ci_low"] - ref.low) < 0.1 * width
    assert abs(ours["ci_high"] - ref.high) < 0.1 * width
    assert paired_bootstrap(before, after) == ours  # fixed seed: the report repeats
    same = paired_bootstrap(before, before + 0.25)  # a constant shift: a zero-width CI
    assert same["ci_low"] == pytest.approx(0.25) and same["ci_high"] == pytest.approx(0.25)
    inf = paired_bootstrap(torch.tensor([1.0, float("inf")]), torch.tensor([2.0, float("inf")]))
    assert inf["n"] == 1 and inf["delta"] == 1.0  # exact reconstructions are left out


def test_verdict_uses_the_tolerance():
    def sets(delta):
        return {"reference": {"metrics": {"psnr": {"delta": delta, "ci_low": delta - 0.1,
                                                   "ci_high": delta + 0.1}}}}
    assert verdict(sets(-0.2), 0.1)["regressed"]
    assert not verdict(sets(-0.05), 0.1)["regressed"]
    assert not verdict(sets(-0.2), 0.5)["regressed"]
    assert not verdict({}, 0.1)["regressed"]


def test_reference_data_needs_a_model_directory(tmp_path):
    with pytest.raises(InputError, match="not a model directory"):
        make_config({"data": "x", "model": "sdvae-tiny", "reference_data": str(tmp_path)})
    with pytest.raises(InputError, match="regression_tolerance"):
        make_config({"data": "x", "regression_tolerance": -1})


DOC = Path(__file__).resolve().parents[1] / "docs" / "finetuning.md"


def doc_commands(text: str) -> list[list[str]]:
    """The ``latentae`` commands of the ```bash blocks (continuations joined, comments
    dropped), as argument lists."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            args = shlex.split(line, comments=True)
            if args:
                assert args[0] == "latentae", line
                commands.append(args[1:])
    return commands


def test_docs_finetuning_commands_run(tmp_path, monkeypatch, fetched):
    monkeypatch.chdir(tmp_path)
    diffusers_vae(Path("my_vae"), "sd")
    for name, seed in (("my_domain", 0), ("my_val", 1), ("general_images", 2)):
        sinusoid_images(Path(name), 4, seed)
    tiny = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")] + ["--no-progress"]
    commands = doc_commands(DOC.read_text())
    assert sum(c[0] == "train" for c in commands) == 3
    for args in commands:
        assert main(args + (tiny if args[0] == "train" else [])) == 0, args
    for code in re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S):
        exec(compile(code, str(DOC), "exec"), {})
    assert json.loads(Path("runs/ft/regression.json").read_text())["sets"]["reference"]
    assert Path("runs/ft2/model/discriminator/model.safetensors").is_file()
    assert (Path("runs/ft-stream/regression.md")).is_file()
    assert AutoencoderKL.from_pretrained("my_vae_ft").config.latent_channels == 4
