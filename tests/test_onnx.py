"""ONNX export (``latentae/convert/onnx.py``, ``latentae export --format onnx``): every
family's two graphs against PyTorch in onnxruntime (max abs error <= 1e-4, float32) at
a batch and size other than the traced ones, the CLI end to end with the commands of
``docs/deployment.md``, the bench's onnxruntime column, and the errors.

One export per family (module fixtures; exporting is the slow part, ~10-30 s a graph)."""

import contextlib
import io
import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import latentae
from latentae.bench import BenchSettings, build_subjects, run_bench, subjects, to_markdown
from latentae.cards import read_card
from latentae.cli import main
from latentae.convert import onnx as lonnx
from latentae.errors import InputError, LatentaeError

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

DOC = Path(__file__).resolve().parents[1] / "docs" / "deployment.md"
PRESETS = {"litevae": "litevae-tiny", "sdvae": "sdvae-tiny", "dcae": "dcae-tiny-f32"}


def _model(preset: str):
    torch.manual_seed(0)
    return latentae.create_model(preset).eval()


@pytest.fixture(scope="module")
def cli_export(tmp_path_factory):
    """docs/deployment.md's command on a saved litevae-tiny: (model, cwd, stdout)."""
    cwd = tmp_path_factory.mktemp("deploy")
    model = _model("litevae-tiny")
    model.save_pretrained(str(cwd / "my-vae"))
    out, before = io.StringIO(), os.getcwd()
    os.chdir(cwd)  # the command as written, with relative folders
    try:
        with contextlib.redirect_stdout(out):
            rc = main(["export", "my-vae", "--format", "onnx", "my-vae-onnx"])
    finally:
        os.chdir(before)
    assert rc == 0
    return model, cwd, out.getvalue()


@pytest.fixture(scope="module")
def exported(cli_export, tmp_path_factory):
    """family -> (model, folder): litevae through the CLI, the others through the API."""
    model, cwd, _ = cli_export
    out = {"litevae": (model, cwd / "my-vae-onnx")}
    for family in ("sdvae", "dcae"):
        m = _model(PRESETS[family])
        folder = tmp_path_factory.mktemp(family)
        lonnx.export_onnx(m, folder)
        out[family] = (m, folder)
    return out


@pytest.mark.parametrize("family", list(PRESETS))
def test_graphs_match_pytorch_at_new_batch_and_size(exported, family):
    model, folder = exported[family]
    f, nz = model.spatial_compression_ratio, model.latent_channels
    h, w = max(64 // f, 3) + 3, max(64 // f, 3) + 1  # traced: (2, 8, 9) latents for f8
    g = torch.Generator().manual_seed(7)
    for batch in (1, 3):
        x = torch.rand(batch, 3, h * f, w * f, generator=g) * 2 - 1
        z = torch.randn(batch, nz, h, w, generator=g) * 2
        with torch.no_grad():
            ref_z, ref_x = model.encode(x).mode().numpy(), model.decode(z).numpy()
        enc = lonnx.inference_session(folder / "encoder.onnx", threads=1)
        dec = lonnx.inference_session(folder / "decoder.onnx", threads=1)
        got_z = enc.run(None, {"images": x.numpy()})[0]
        got_x = dec.run(None, {"latents": z.numpy()})[0]
        assert got_z.shape == (batch, nz, h, w) and got_x.shape == (batch, 3, h * f, w * f)
        assert np.abs(got_z - ref_z).max() <= 1e-4
        assert np.abs(got_x - ref_x).max() <= 1e-4
        assert np.abs(ref_z).max() > 0.1 and np.abs(ref_x).max() > 0.1  # not trivially 0


def test_graph_inputs_outputs_and_metadata(exported):
    model, folder = exported["dcae"]
    session = ort.InferenceSession(str(folder / "encoder.onnx"))
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert inp.name == "images" and out.name == "latents"
    assert inp.shape == ["batch", 3, "32*latent_height", "32*latent_width"]  # dynamic
    assert out.shape == ["batch", model.latent_channels, "latent_height", "latent_width"]
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["latentae.family"] == "dcae" and meta["latentae.graph"] == "encoder"
    assert int(meta["latentae.spatial_compression_ratio"]) == 32
    assert float(meta["latentae.scaling_factor"]) == model.scaling_factor
    dec = ort.InferenceSession(str(folder / "decoder.onnx"))
    assert [i.name for i in dec.get_inputs()] == ["latents"]
    assert dec.get_inputs()[0].shape == ["batch", model.latent_channels, "latent_height",
                                         "latent_width"]
    assert dec.get_outputs()[0].shape == ["batch", 3, "32*latent_height", "32*latent_width"]
    assert sorted(p.name for p in folder.iterdir()) == ["decoder.onnx", "encoder.onnx"]


def test_parity_check_fails_for_a_different_model(exported):
    model, folder = exported["sdvae"]
    changed = _model("sdvae-tiny")
    with torch.no_grad():
        changed.decoder.conv_out.bias.add_(1e-3)
    lonnx.check_parity(model, folder)  # the exported model passes
    with pytest.raises(LatentaeError, match="decoder differs from PyTorch"):
        lonnx.check_parity(changed, folder)


def test_cli_export_prints_the_check_and_leaves_nothing_else(cli_export):
    _, cwd, stdout = cli_export
    assert "wrote onnx model to my-vae-onnx" in stdout
    diffs = [float(d) for d in re.findall(r": (\d\.\de-\d\d)", stdout)]
    assert len(diffs) == 4 and max(diffs) <= 1e-4
    assert sorted(p.name for p in cwd.iterdir()) == ["my-vae", "my-vae-onnx"]  # no temp
    card = read_card(cwd / "my-vae-onnx")[0]  # the model card travels with the graphs
    assert card["format"] == "onnx" and card["family"] == "litevae"
    assert sorted(p.name for p in (cwd / "my-vae-onnx").iterdir()) == [
        "README.md", "decoder.onnx", "encoder.onnx"]


def test_docs_python_example_runs(cli_export, monkeypatch):
    _, cwd, _ = cli_export
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1
    monkeypatch.chdir(cwd)
    exec(compile(blocks[0], str(DOC), "exec"), {})


def test_docs_commands_are_the_ones_tested():
    text = DOC.read_text()
    assert "latentae export my-vae --format onnx my-vae-onnx" in text
    assert "latentae bench litevae-b --compare onnxruntime --modes encode,decode " \
           "--threads 1" in text


@pytest.fixture
def reuse_exports(exported, monkeypatch):
    """The bench's onnxruntime column copies the litevae graphs instead of exporting
    again (exporting is tested above; this keeps the bench tests to seconds)."""
    _, folder = exported["litevae"]
    monkeypatch.setattr(subjects, "export_graph",
                        lambda model, graph, path: shutil.copy(folder / f"{graph}.onnx", path))
    return exported["litevae"][0]


def test_bench_onnxruntime_column(reuse_exports, capsys, tmp_path):
    """The bench commands of docs/deployment.md and docs/benchmarks.md (section F),
    litevae-b swapped for litevae-tiny at 32²: the column, its rows, its output check."""
    cols = build_subjects([("litevae-tiny", reuse_exports)], compare="onnxruntime",
                          note=lambda m: None, dtypes=["float32", "bfloat16"])
    assert [s.name for s in cols] == ["litevae-tiny", "onnxruntime:litevae-tiny",
                                      "litevae-tiny@bfloat16"]  # float32 only
    assert main(["bench", "litevae-tiny", "--compare", "onnxruntime", "--threads", "1",
                 "--resolution", "32", "--batch-size", "2", "--warmup", "0", "--repeats",
                 "1", "--json", str(tmp_path / "F1.json")]) == 0
    report = json.loads((tmp_path / "F1.json").read_text())
    ort_col, torch_col = (report["results"][n] for n in ("onnxruntime:litevae-tiny",
                                                          "litevae-tiny"))
    assert ort_col["kind"] == "onnxruntime" and ort_col["twin_of"] == "litevae-tiny"
    assert ort_col["encode"]["images_per_s"] > 0 and ort_col["decode"]["images_per_s"] > 0
    assert ort_col["encode"]["peak_memory_bytes"] is None
    assert "train_encode" not in ort_col and "train_encode" in torch_col
    assert ort_col["equal_outputs"]["equal"]
    assert ort_col["gflops_per_image"] == torch_col["gflops_per_image"]
    table = capsys.readouterr().out
    assert table.strip() == to_markdown(report, baseline="litevae-tiny").strip()
    assert "| | litevae-tiny | onnxruntime:litevae-tiny |" in table
    row = next(r for r in table.splitlines() if r.startswith("| train encode (fwd+bwd) images/s"))
    assert row.endswith("| – |")
    assert re.search(r"\| same outputs as latentae \| – \| yes ", table)


def test_bench_refuses_what_onnxruntime_cannot_do(reuse_exports, capsys):
    assert main(["bench", "litevae-tiny", "--compare", "onnxruntime", "--dtype",
                 "bfloat16,float32", "--resolution", "32", "--repeats", "1"]) == 2
    assert "put float32 first" in capsys.readouterr().err
    cols = build_subjects([("litevae-tiny", reuse_exports)], compare="onnxruntime",
                          note=lambda m: None)
    with pytest.raises(InputError, match="use --device cpu"):  # before touching a GPU
        run_bench(cols, BenchSettings(device="cuda"), progress=lambda m: None)


def test_missing_onnx_packages_give_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` fails
    with pytest.raises(InputError, match=r"pip install latentae\[onnx\]"):
        lonnx.require_onnx()
    out = tmp_path / "out"
    assert main(["export", "sdvae-tiny", "--random-init", "--format", "onnx", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install latentae[onnx]" in err
    assert not out.exists()
    assert main(["bench", "sdvae-tiny", "--compare", "onnxruntime"]) == 2
    assert "pip install latentae[onnx]" in capsys.readouterr().err


def test_export_refuses_bad_input_before_exporting(tmp_path, capsys):
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("keep")
    assert main(["export", "sdvae-tiny", "--random-init", "--format", "onnx", str(full)]) == 2
    assert (full / "x").read_text() == "keep"
    with pytest.raises(InputError, match="float32"):
        lonnx.export_onnx(_model("sdvae-tiny").half(), tmp_path / "half")


def test_a_failed_export_leaves_no_folder(tmp_path, monkeypatch):
    def fail(model, folder, progress=None):
        (Path(folder) / "encoder.onnx").write_bytes(b"half")
        raise LatentaeError("ONNX export of the decoder failed: boom")

    monkeypatch.setattr("latentae.cli.tools.export_onnx", fail)
    out = tmp_path / "out"
    assert main(["export", "sdvae-tiny", "--random-init", "--format", "onnx", str(out)]) == 2
    assert not out.exists() and list(tmp_path.iterdir()) == []

