"""``--compile`` everywhere (issue 29): encode/decode/reconstruct, eval and both trainings run
the model through torch.compile and give the eager values (≤ 1e-4). The ``eager`` backend
captures the same graph as inductor without generating code, so this runs in seconds on CPU;
inductor's own correctness is torch's to test."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from diffusion_helpers import run, save_autoencoder, write_images  # noqa: E402
from test_train import smooth_images, tiny_config  # noqa: E402

import latentae  # noqa: E402
from latentae.cli import main  # noqa: E402
from latentae.errors import InputError  # noqa: E402
from latentae.runtime import ModelRunner  # noqa: E402
from latentae.train.autoencoder import train  # noqa: E402


@pytest.mark.parametrize("preset", ["litevae-tiny", "dcae-tiny-f32"])
def test_a_compiled_runner_gives_the_eager_values(preset):
    torch.manual_seed(0)
    model = latentae.create_model(preset).eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    eager = ModelRunner(model, "cpu")
    z = eager.encode(x)
    y = eager.decode(z)
    compiled = ModelRunner(latentae.create_model(preset).eval(), "cpu", compile="eager")
    compiled.model.load_state_dict(model.state_dict())
    assert (compiled.encode(x) - z).abs().max() <= 1e-4
    assert (compiled.decode(z) - y).abs().max() <= 1e-4
    # in place: the model keeps its modules and state_dict keys (no _orig_mod.)
    assert set(compiled.model.state_dict()) == set(model.state_dict())


def test_reconstruct_with_compile_writes_the_eager_images(tmp_path):
    save_autoencoder(tmp_path / "ae")
    images = smooth_images(tmp_path / "in", n=2, size=32)
    for name, extra in (("eager", []), ("compiled", ["--compile", "eager"])):
        assert main(["reconstruct", str(tmp_path / "ae"), str(images),
                     str(tmp_path / name), "--device", "cpu", *extra]) == 0
    written = sorted((tmp_path / "eager").rglob("*.png"))
    assert len(written) == 4  # the reconstructions and the side-by-side pictures
    for f in written:
        a = np.asarray(Image.open(f), dtype=np.int16)
        b = np.asarray(Image.open(tmp_path / "compiled" / f.relative_to(tmp_path / "eager")),
                       dtype=np.int16)
        assert np.abs(a - b).max() <= 1  # 8-bit images: at most a rounding step


def test_autoencoder_training_compiles_and_old_switch_values_still_load(tmp_path):
    cfg = tiny_config(tmp_path, "run", compile="eager")
    assert cfg.compile == "eager"
    assert train(cfg) is not None
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    # config files written before compile named a backend said true / false
    assert tiny_config(tmp_path, "old", compile=False).compile is None
    assert tiny_config(tmp_path, "old", compile=True).compile == "inductor"
    with pytest.raises(InputError, match="compile"):
        tiny_config(tmp_path, "old", compile="fast")


def test_diffusion_training_compiles_to_the_eager_weights(tmp_path):
    ae = save_autoencoder(tmp_path / "ae")
    data = write_images(tmp_path / "images")
    run(tmp_path / "eager", ae, data, steps=3, ckpt_every=0)
    run(tmp_path / "compiled", ae, data, steps=3, ckpt_every=0, compile="eager")
    from safetensors.torch import load_file
    a = load_file(str(tmp_path / "eager" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "compiled" / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-4


@pytest.mark.parametrize("command", [
    ["encode", "m", "in", "out"], ["decode", "m", "in", "out"], ["reconstruct", "m", "in", "out"],
    ["eval", "m", "--data", "in"], ["train", "--data", "in", "--out", "o"],
    ["diffusion", "train", "--data", "in", "--out", "o"]])
def test_every_command_that_runs_a_model_takes_compile(command, capsys):
    from latentae.cli import build_parser
    parser = build_parser()
    assert parser.parse_args([*command, "--compile"]).compile == "inductor"  # bare: inductor
    assert parser.parse_args([*command, "--compile", "eager"]).compile == "eager"
    assert parser.parse_args(command).compile is None
    with pytest.raises(SystemExit) as e:  # an unknown backend: a usage error, exit 2
        parser.parse_args([*command, "--compile", "fast"])
    assert e.value.code == 2 and "--compile" in capsys.readouterr().err
