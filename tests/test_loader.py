"""``latentae.load`` (``latentae/loader.py``), the one loader: saved autoencoder and
diffusion folders, run folders (the newest checkpoint's EMA weights) and checkpoint files,
always in eval mode with ``requires_grad`` off (issue 25 item 4); ``export``, ``eval`` and
``info`` take a run folder and a checkpoint file the same way."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import latentae
from latentae.cli import main
from latentae.engine.state import list_states, read_state
from latentae.errors import InputError

sys.path.insert(0, str(Path(__file__).parent))
from diffusion_helpers import run as diffusion_run  # noqa: E402
from diffusion_helpers import save_autoencoder, write_images  # noqa: E402
from test_train import smooth_images, tiny_config  # noqa: E402


def _frozen_eval(model: torch.nn.Module) -> None:
    assert not model.training and not any(m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())


def test_load_returns_eval_mode_and_dcae_decode_is_unchanged_by_a_forward(tmp_path):
    torch.manual_seed(0)
    model = latentae.create_model("dcae-tiny-f32")
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms  # the trap needs DC-AE's BatchNorm decoder stages
    for bn in norms:  # running statistics that differ from any one batch's
        bn.running_mean.normal_(0, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    model.save_pretrained(str(tmp_path / "m"))
    z = torch.randn(2, model.latent_channels, 2, 2)
    with torch.no_grad():
        ref = model.eval().decode(z)
    loaded = latentae.load(tmp_path / "m")
    _frozen_eval(loaded)
    with torch.no_grad():
        first = loaded.decode(z)
        loaded.decode(3 * torch.randn_like(z) + 1)  # a forward in between
        second = loaded.decode(z)
    torch.testing.assert_close(first, ref)
    torch.testing.assert_close(second, ref)
    for a, b in zip(norms, [m for m in loaded.modules() if isinstance(m, torch.nn.BatchNorm2d)]):
        torch.testing.assert_close(a.running_mean, b.running_mean)  # not overwritten


@pytest.fixture(scope="module")
def paused_run(tmp_path_factory):
    """An autoencoder run stopped after 2 of its 6 steps (checkpoint at step 2, no model/)."""
    tmp = tmp_path_factory.mktemp("paused")
    cfg = tiny_config(tmp, "run", max_steps=2)
    from latentae.train.autoencoder import train
    from latentae.train.config import resolve_recipe
    assert train(cfg, resolve_recipe(cfg)) is None
    run = Path(cfg.out)
    assert not (run / "model").exists() and list_states(run / "checkpoints")
    return run


def _ema(checkpoint: Path) -> dict[str, torch.Tensor]:
    return read_state(checkpoint)["ema"]["model"]


def test_a_run_folder_and_a_checkpoint_load_their_ema_weights(paused_run):
    newest = list_states(paused_run / "checkpoints")[-1][1]
    for spec in (paused_run, newest, str(paused_run)):
        model = latentae.load(spec)
        _frozen_eval(model)
        assert model.family == "litevae"
        for k, v in _ema(newest).items():
            torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=0)
    with pytest.raises(InputError, match="needs a diffusion model"):
        latentae.loader.load(paused_run, kind="diffusion")


def test_export_eval_info_take_a_run_folder_and_a_checkpoint(fetched, paused_run, tmp_path,
                                                             capsys):
    newest = list_states(paused_run / "checkpoints")[-1][1]
    assert main(["export", str(paused_run), str(tmp_path / "exp"), "--format", "latentae"]) == 0
    exported = latentae.load(tmp_path / "exp")
    for k, v in _ema(newest).items():
        torch.testing.assert_close(exported.state_dict()[k], v, rtol=0, atol=0)
    capsys.readouterr()
    assert main(["info", str(newest), "--json", "-"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["family"] == "litevae" and "checkpoint" in info["source"]
    assert main(["info", str(paused_run)]) == 0
    assert "run folder" in capsys.readouterr().out
    images = smooth_images(tmp_path / "images", n=1)
    assert main(["eval", str(newest), "--data", str(images), "--resolution", "32", "--out",
                 str(tmp_path / "ev"), "--no-progress", "--no-diffusability"]) == 0
    doc = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert doc["protocol"]["images"] == 1 and doc["metrics"]["psnr"] > 0


def test_a_diffusion_run_folder_loads_its_ema_model(tmp_path, capsys):
    ae = save_autoencoder(tmp_path / "ae")
    data = write_images(tmp_path / "data")
    run = tmp_path / "drun"
    diffusion_run(run, ae, data, steps=6, max_steps=3)
    newest = list_states(run / "checkpoints")[-1][1]
    model = latentae.load(run)
    _frozen_eval(model)
    assert model.family == "dit"
    for k, v in _ema(newest).items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=0)
    with pytest.raises(InputError, match="needs an autoencoder"):
        latentae.loader.load(run, kind="autoencoder")
    assert main(["export", str(run), str(tmp_path / "x")]) == 2  # a one-line error
    capsys.readouterr()
    assert main(["info", str(run)]) == 0  # paused: no RUN/model yet, the checkpoint's model
    out = capsys.readouterr().out
    assert "diffusion run folder" in out and "dit" in out


def test_info_of_an_onnx_export_folder(tmp_path, capsys):
    from latentae.cards import card_fields, write_card
    folder = tmp_path / "onnx"
    folder.mkdir()
    for name in ("encoder.onnx", "decoder.onnx"):
        (folder / name).write_bytes(b"\0" * 2048)  # info reads the files' sizes, not graphs
    write_card(folder, card_fields(latentae.create_model("litevae-tiny"), "onnx"))
    assert main(["info", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "ONNX export folder" in out and "encoder.onnx" in out and "litevae" in out


def test_a_finished_run_exports_and_shows_its_training_card(paused_run, tmp_path, capsys):
    import shutil

    from latentae.cards import read_card
    from latentae.train.autoencoder import train
    from latentae.train.config import make_config, resolve_recipe
    run = tmp_path / "run"
    shutil.copytree(paused_run, run)
    config = yaml_config(run)
    cfg = make_config({**config["train"], "out": str(run), "resume": "auto", "max_steps": 0})
    assert train(cfg, resolve_recipe(cfg)) == run / "model"
    trained = read_card(run / "model")[0]
    assert trained and "recipe" in trained
    assert main(["export", str(run), str(tmp_path / "exp"), "--format", "latentae"]) == 0
    assert read_card(tmp_path / "exp")[0]["recipe"] == trained["recipe"]
    capsys.readouterr()
    assert main(["info", str(run), "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["source"] == "latentae directory"


def yaml_config(run: Path) -> dict:
    import yaml
    return yaml.safe_load((run / "config.yaml").read_text())


@pytest.mark.parametrize("preset", ["sdvae-tiny", "dcae-tiny-f32"])
def test_a_library_loaded_autoencoder_is_on_the_fast_path_with_the_same_outputs(preset, tmp_path):
    """Issue 29: what makes latentae fast on CPU reaches ``latentae.load`` users, who pass
    ordinary NCHW tensors: channels_last weights (so oneDNN runs channels_last), glibc's
    allocator tuned; the encode/decode values are those of the model as created."""
    torch.manual_seed(0)
    made = latentae.create_model(preset).eval()
    made.save_pretrained(tmp_path / "m")
    loaded = latentae.load(tmp_path / "m")
    convs = [m.weight for m in loaded.modules() if isinstance(m, torch.nn.Conv2d)
             and m.weight.shape[-1] > 1 and m.weight.shape[1] > 1]
    # each family in its faster format: channels_last, DC-AE contiguous (benchmarks.md H)
    fast = {"sdvae-tiny": True, "dcae-tiny-f32": False}[preset]
    assert loaded.channels_last_inference is fast
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) is fast
                         and w.is_contiguous() is not fast for w in convs)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        z = made.encode(x).mode()
        assert torch.allclose(loaded.encode(x).mode(), z, atol=1e-5)
        assert torch.allclose(loaded.decode(z), made.decode(z), atol=1e-5)
    # a command that asks for the default memory format still gets it
    from latentae.runtime import ModelRunner
    runner = ModelRunner(latentae.load(tmp_path / "m"), "cpu", channels_last=False)
    assert all(m.weight.is_contiguous() for m in runner.model.modules()
               if isinstance(m, torch.nn.Conv2d))
    # and by default the family's choice
    default = ModelRunner(latentae.load(tmp_path / "m"), "cpu")
    assert default.memory_format == (torch.channels_last if fast else torch.contiguous_format)
