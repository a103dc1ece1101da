"""From a converted checkpoint to gFID with commands only: ``diffusion convert`` (an
efficientvit-layout DiT) -> ``diffusion sample`` (with ``--autoencoder``, or after
``diffusion attach``) -> ``diffusion eval`` against an ADM reference batch; random labels,
``--noise``, latents and the grid in the output; and ``torchrun`` with 2 gloo processes
writing the same images as one process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from diffusion_helpers import save_autoencoder, write_images  # noqa: E402

from latentae.cli import main  # noqa: E402
from latentae.diffusion import attach as attach_module  # noqa: E402
from latentae.diffusion import create_diffusion  # noqa: E402
from latentae.diffusion.attach import RUN_FILE, resolve_info  # noqa: E402
from latentae.diffusion.generate import sample_labels  # noqa: E402

FAST = ["--steps", "3", "--batch-size", "3", "--device", "cpu", "--no-progress"]
DOCS = Path(__file__).resolve().parents[1] / "docs" / "diffusion.md"
RELEASE = "dc-ae-f32c32-in-1.0-usit-h-in-512px"
DOC_COMMANDS = (
    f"latentae diffusion convert {RELEASE} usit-h",
    "latentae diffusion sample usit-h --autoencoder dc-ae-f32c32-in-1.0-diffusers --n 50000 "
    "--out usit-h-samples",
    "latentae diffusion eval usit-h-samples/samples.npz --ref imagenet_512_train.npz")


def efficientvit_checkpoint(path: Path) -> Path:
    """A dit-tiny/1 on 4×4×4 latents with 5 classes, saved as efficientvit's training
    checkpoints nest it: {"ema": {name: {"dit.<key>": tensor}}}; non-zero everywhere."""
    torch.manual_seed(0)
    model = create_diffusion("dit-tiny", patch_size=1, in_channels=4, input_size=4,
                             num_classes=5)
    sd = {k: v + 0.05 * torch.randn_like(v) if k != "pos_embed" else v
          for k, v in model.state_dict().items()}
    torch.save({"ema": {"ema_0.9999": {"dit." + k: v for k, v in sd.items()}}}, path)
    return path


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("conv")
    ae = save_autoencoder(root / "ae")  # litevae-tiny: 4 channels, f8 -> 32² images
    ckpt = efficientvit_checkpoint(root / "ckpt.pt")
    argv = ["diffusion", "convert", str(ckpt), str(root / "model"), "--release", "dcae-dit",
            "--model", "dit-tiny", "--patch-size", "1", "--input-size", "4",
            "--in-channels", "4", "--num-classes", "5"]
    assert main(argv) == 0
    return root, ae


def test_convert_sample_eval_from_the_command_line(converted, tmp_path, capsys, fetched):
    root, ae = converted
    model = root / "model"
    assert (model / "release.json").is_file() and not (model / RUN_FILE).exists()
    info = resolve_info(model, autoencoder=str(ae))
    assert (info.sampler, info.sample_steps, info.guidance, info.objective) == (
        "ddpm", 250, 1.3, "ddpm")  # the DC-AE DiT's own defaults
    assert main(["diffusion", "sample", str(model), "--n", "5"] + FAST
                + ["--out", str(tmp_path / "s")]) == 2  # no autoencoder: a one-line error
    assert "--autoencoder" in capsys.readouterr().err
    out = tmp_path / "s"
    assert main(["diffusion", "sample", str(model), "--autoencoder", str(ae), "--n", "5",
                 "--out", str(out), *FAST]) == 0
    with np.load(out / "samples.npz") as z:
        assert z["arr_0"].shape == (5, 32, 32, 3) and z["arr_0"].dtype == np.uint8
        assert z["latents"].shape == (5, 4, 4, 4) and z["latents"].dtype == np.float32
        labels = z["labels"].tolist()
    assert labels == sample_labels(list(range(5)), 5, "random", 0).tolist()
    assert all(0 <= y < 5 for y in labels) and labels != [0, 1, 2, 3, 4]
    assert (out / "grid.png").is_file()
    # an ADM reference batch of real images, and eval from the command line
    imgs = np.stack([np.asarray(Image.open(p)) for p in
                     sorted(write_images(tmp_path / "real").rglob("*.png"))])
    np.savez(tmp_path / "ref.npz", arr_0=imgs)
    capsys.readouterr()
    assert main(["diffusion", "eval", str(out / "samples.npz"), "--ref",
                 str(tmp_path / "ref.npz"), "--device", "cpu", "--no-progress",
                 "--kid-subsets", "2"]) == 0
    text = capsys.readouterr().out
    assert "sFID" in text and "ADM reference batch" in text and "tf1" in text
    assert "KID's ± not reported" in text  # 5 samples: no spread pretends to be one


def test_attach_once_then_sample_without_flags_and_noise_file(converted, tmp_path, capsys):
    root, ae = converted
    model = tmp_path / "model"
    shutil.copytree(root / "model", model)
    assert main(["diffusion", "attach", str(model), "--autoencoder", str(ae),
                 "--latent-scale", "0.5", "--guidance", "1"]) == 0
    assert (model / RUN_FILE).is_file() and "latent scale 0.5" in capsys.readouterr().out
    noise = torch.randn(4, 4, 4, 4, generator=torch.Generator().manual_seed(5)).numpy()
    np.save(tmp_path / "x.npy", noise)
    ddim = ["--sampler", "ddim", "--labels", "balanced"]
    for seed, name in (("0", "a"), ("7", "b")):
        assert main(["diffusion", "sample", str(model), "--noise", str(tmp_path / "x.npy"),
                     "--seed", seed, "--out", str(tmp_path / name), *ddim, *FAST]) == 0
    assert main(["diffusion", "sample", str(model), "--n", "4", "--out",
                 str(tmp_path / "c"), *ddim, *FAST]) == 0
    with np.load(tmp_path / "a/samples.npz") as a, np.load(tmp_path / "b/samples.npz") as b, \
            np.load(tmp_path / "c/samples.npz") as c:
        # DDIM (eta 0) is deterministic given x_T: the seed no longer matters, the noise does
        assert np.array_equal(a["latents"], b["latents"]) and a["arr_0"].shape[0] == 4
        assert not np.allclose(a["latents"], c["latents"])
        assert a["labels"].tolist() == [0, 1, 2, 3]
    np.save(tmp_path / "bad.npy", noise[:, :3])
    assert main(["diffusion", "sample", str(model), "--noise", str(tmp_path / "bad.npy"),
                 "--out", str(tmp_path / "d"), *FAST]) == 2
    assert "expected at least 4 initial latents of shape (4, 4, 4)" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None,
                    reason="torchrun is not installed beside this Python")
def test_torchrun_two_processes_write_the_images_of_one(converted, tmp_path):
    root, ae = converted
    common = [str(root / "model"), "--autoencoder", str(ae), "--num-samples", "7", *FAST]
    assert main(["diffusion", "sample", *common, "--out", str(tmp_path / "one")]) == 0
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "latentae", "diffusion",
           "sample", *common, "--out", str(tmp_path / "two")]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("wrote 7 samples") == 1  # rank 0 speaks
    for i in range(7):  # blocks of 3: rank 0 drew 0-2 and 6, rank 1 drew 3-5
        name = f"{i:06d}.png"
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    with np.load(tmp_path / "one/samples.npz") as a, np.load(tmp_path / "two/samples.npz") as b:
        for k in ("arr_0", "labels", "latents"):
            assert np.array_equal(a[k], b[k]), k


def test_the_docs_release_commands(tmp_path, monkeypatch, capsys, fetched):
    """docs/diffusion.md §5 as written, on a stand-in: efficientvit's Hugging Face folder
    layout (diffusion_model.<key>, config.json model_name) with a uvit-tiny in place of
    USiT-H, a tiny autoencoder under the diffusers folder's name, random {mu, sigma}."""
    text = DOCS.read_text()
    assert all(c in text for c in DOC_COMMANDS)
    tiny = {**attach_module.RELEASES[RELEASE], "model": "uvit-tiny", "input_size": 4,
            "in_channels": 4}
    monkeypatch.setitem(attach_module.RELEASES, RELEASE, tiny)
    monkeypatch.chdir(tmp_path)
    save_autoencoder(tmp_path / "dc-ae-f32c32-in-1.0-diffusers")
    torch.manual_seed(0)
    model = create_diffusion("uvit-tiny", patch_size=1, in_channels=4, input_size=4,
                             num_classes=1000)
    (tmp_path / RELEASE).mkdir()
    save_file({"diffusion_model." + k: v.contiguous() for k, v in model.state_dict().items()},
              tmp_path / RELEASE / "model.safetensors")
    (tmp_path / RELEASE / "config.json").write_text(f'{{"model_name": "{RELEASE}"}}')
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "imagenet_512_train.npz", mu=rng.normal(size=2048) * 0.1,
             sigma=np.eye(2048) * 0.05)
    extra = {1: "--n 4 --batch-size 4 --steps 2 --atol 1e-2 --rtol 1e-2 --device cpu "
                "--no-progress", 2: "--device cpu --no-progress --kid-subsets 2"}
    for k, command in enumerate(DOC_COMMANDS):
        assert main(command.split()[1:] + extra.get(k, "").split()) == 0, command
    out = capsys.readouterr().out
    assert "samples as dc-ae-f32c32-in-1.0-usit-h-in-512px (flow-sit, dopri5" in out
    info = resolve_info(tmp_path / "usit-h", autoencoder="dc-ae-f32c32-in-1.0-diffusers")
    assert (info.objective, info.guidance, info.latent_norm.scale[0]) == ("flow-sit", 1.2,
                                                                         0.3189)
    assert "efficientvit {mu, sigma}" in out and "pytorch-fid" in out
