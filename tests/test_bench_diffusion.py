"""latentae bench --diffusion on tiny models: table and JSON, tokens per (factor, patch)
on real presets built on the meta device, shared trunks, the end-to-end row, bad specs,
and ratio cells that are the quotients of the JSON numbers."""

import json
import re

import pytest
import torch

from latentae.bench.batch_search import add_best_batches, best_batches, search_batch
from latentae.bench.diffusion import infer_call, make_inputs, measure_columns, measure_diffusion
from latentae.bench.diffusion_columns import (
    DiffusionBenchSettings,
    build_columns,
    latent_size,
    load_autoencoder,
    parse_autoencoders,
)
from latentae.bench.diffusion_report import ROWS, to_markdown
from latentae.cli import build_parser
from latentae.cli.bench import cmd_bench_diffusion
from latentae.diffusion import create_diffusion
from latentae.errors import InputError
from latentae.runtime import compile_module

TINY_DIT = {"depth": 2, "hidden_size": 64, "num_heads": 2}
SPECS = "sdvae-tiny:p2,dcae-tiny-f32:p1,litevae-tiny:p2"
JSON_KEYS = {"diffusion", "autoencoder", "patch", "tokens", "gflop", "infer_img_s",
             "infer_cfg_img_s", "train_img_s", "peak_mem_mb"}


def tiny_settings(**changes) -> DiffusionBenchSettings:
    values = dict(diffusion="dit-s", autoencoders=parse_autoencoders(SPECS), resolution=64,
                  batch=2, warmup=1, repeats=2, overrides=TINY_DIT)
    return DiffusionBenchSettings(**{**values, **changes})


@pytest.fixture(scope="module")
def report():
    return measure_diffusion(tiny_settings(on_the_fly=True), progress=lambda m: None)


def run(argv: list[str]) -> int:
    """``latentae bench`` with the diffusion options, batch 1 unless ``argv`` says."""
    args = build_parser().parse_args(["bench", "--batch-size", "1", "--device", "cpu", *argv])
    return cmd_bench_diffusion(args)


def test_rows_have_the_json_keys_and_positive_rates(report):
    rows = report["rows"]
    assert [r["column"] for r in rows] == SPECS.split(",")
    for r in rows:
        assert JSON_KEYS | {"e2e_train_img_s", "encoder_gflop"} <= set(r)
        for key in ("gflop", "infer_img_s", "infer_cfg_img_s", "train_img_s",
                    "train_fwd_bwd_img_s", "e2e_train_img_s", "encoder_gflop", "optimizer_s"):
            assert r[key] > 0, (r["column"], key)
        assert all(len(ts) == 2 for ts in r["times_s"].values())
        for key in ("infer", "infer_cfg", "train", "train_fwd_bwd", "e2e_train"):
            assert r[f"{key}_best_img_s"] >= r[f"{key}_img_s"] * (1 - 1e-12), key
        # the training step is fwd + bwd plus the separately timed AdamW step
        assert 2 / r["train_img_s"] == pytest.approx(2 / r["train_fwd_bwd_img_s"]
                                                     + r["optimizer_s"])
    json.dumps(report)


def test_counted_flops_equal_the_analytic_count(report):
    for r in report["rows"]:
        assert r["gflop_counted"] == pytest.approx(r["gflop"], rel=1e-9)


def test_markdown_has_a_column_per_spec_and_every_measured_row(report):
    text = to_markdown(report)
    table = [ln for ln in text.splitlines() if ln.startswith("|")]
    assert table[0] == "| | " + " | ".join(SPECS.split(",")) + " |"
    labels = [ln.split(" | ")[0][2:] for ln in table[2:]]
    # on the fly: every row is measured but the best-batch rows (no --best-batch here)
    assert labels == [label for label, key, *_ in ROWS if "best_batch" not in key]
    assert all(ln.count("|") == 5 for ln in table)
    assert "multiply-add is 2 FLOPs" in text and "load average" in text


def _ratio(text: str, label: str, column: int) -> float:
    row = next(ln for ln in text.splitlines() if ln.startswith(f"| {label} |"))
    cell = row.strip("|").split(" | ")[column + 1]
    return float(re.search(r"\(([0-9.]+)×\)", cell).group(1))


@pytest.mark.parametrize("baseline", ["sdvae-tiny:p2", "litevae-tiny:p2"])
def test_ratio_cells_are_quotients_of_the_json_numbers(report, baseline):
    text = to_markdown(report, baseline)
    rows = report["rows"]
    base = next(r for r in rows if r["column"] == baseline)
    for label, key, _, note in ROWS:
        if note != "ratio":
            continue
        for i, r in enumerate(rows):
            if base.get(key):
                assert _ratio(text, label, i) == pytest.approx(round(r[key] / base[key], 2),
                                                               abs=0.0051), (label, i)


@pytest.mark.parametrize("spec, factor, patch, tokens", [
    ("sdvae-f8:p2", 8, 2, 1024), ("dcae-f32c32:p1", 32, 1, 256),
    ("dcae-f64c128:p1", 64, 1, 64), ("litevae-b:p2", 8, 2, 1024)])
def test_tokens_are_image_over_factor_over_patch_squared(spec, factor, patch, tokens):
    (s,) = parse_autoencoders(spec)
    ae = load_autoencoder(s.name, real=False, device=torch.device("cpu"))
    assert ae.spatial_compression_ratio == factor
    n = latent_size(s, 512, factor)
    with torch.device("meta"):
        model = create_diffusion("uvit-h", patch_size=s.patch, in_channels=ae.latent_channels,
                                 input_size=n, num_classes=1000)
    assert model.tokens == tokens == (512 // factor // patch) ** 2


def test_columns_share_the_trunk_but_not_the_latent_layers():
    a, b = build_columns(tiny_settings(), progress=lambda m: None)[:2]
    assert a.model.blocks[0].attn.qkv.weight is b.model.blocks[0].attn.qkv.weight
    assert a.model.x_embedder.proj.weight is not b.model.x_embedder.proj.weight
    assert a.model.final_layer.linear.weight.shape != b.model.final_layer.linear.weight.shape


def test_without_on_the_fly_there_is_no_end_to_end_column(tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert run(["--diffusion", "dit-s", "--autoencoders", "sdvae-tiny:p2,dcae-tiny-f32:p1",
                "--resolution", "32", "--repeats", "1", "--warmup", "0", "--json", str(out),
                "--baseline", "dcae-tiny-f32:p1"]) == 0
    rows = json.loads(out.read_text())
    assert isinstance(rows, list) and [r["column"] for r in rows] == [
        "sdvae-tiny:p2", "dcae-tiny-f32:p1"]
    assert all(JSON_KEYS <= set(r) and "e2e_train_img_s" not in r for r in rows)
    assert [r["tokens"] for r in rows] == [4, 1]  # 32²: f8 p2 -> 2×2, f32 p1 -> 1×1
    text = capsys.readouterr().out
    assert "end-to-end" not in text and "Ratios in parentheses are to **dcae-tiny-f32:p1**" in text
    assert "latentae bench --diffusion dit-s --autoencoders sdvae-tiny:p2" in text


@pytest.mark.parametrize("spec, why", [
    ("sdvae-tiny", "NAME:pP"), ("sdvae-tiny:2", "NAME:pP"), ("sdvae-tiny:p0", "NAME:pP"),
    ("sdvae-tiny:p2,sdvae-tiny:p2", "given twice"), ("", "NAME:pP"),
    ("no-such-vae:p2", "presets: "), ("sdvae-tiny:p3", "valid patches: p1, p2, p4, p8"),
])
def test_bad_specs_are_rejected_naming_the_valid_forms(spec, why):
    with pytest.raises(InputError, match=re.escape(why)):
        run(["--diffusion", "dit-s", "--autoencoders", spec, "--resolution", "64"])


@pytest.mark.parametrize("argv, why", [
    (["--diffusion", "dit-q"], "unknown diffusion model"),
    (["--baseline", "sdvae-f8:p2"], "not among the columns"),
    (["--resolution", "60"], "not divisible by the autoencoder's factor 8"),
    (["--dtype", "float32,bfloat16"], "one --dtype"),
    (["--json", "/no/such/folder/rows.json"], "cannot write"),
    (["--diffusion-modes", "infer,sample"], "unknown diffusion bench mode(s) ['sample']"),
    (["--diffusion-modes", "e2e"], "add --on-the-fly"),
])
def test_bad_arguments_are_rejected_before_measuring(argv, why):
    base = ["--diffusion", "dit-s", "--autoencoders", "sdvae-tiny:p2"]
    with pytest.raises(InputError, match=re.escape(why)):
        run(base + argv)


def test_a_mode_subset_times_only_those_modes():
    settings = tiny_settings(repeats=1, warmup=0, mode_subset=("infer",),
                             autoencoders=parse_autoencoders("sdvae-tiny:p2"))
    (row,) = measure_diffusion(settings, progress=lambda m: None)["rows"]
    assert list(row["times_s"]) == ["infer"] and row["infer_img_s"] > 0
    assert "train_img_s" not in row and "infer_cfg_img_s" not in row


def test_latentae_bench_diffusion_runs_through_the_cli(tmp_path, capsys):
    # The flag lives on `latentae bench`: the shared flags (--batch-size, --dtype) reach
    # the diffusion bench, and MODEL arguments beside --diffusion are refused.
    from latentae.cli import main
    out = tmp_path / "rows.json"
    assert main(["bench", "--diffusion", "dit-s", "--autoencoders", "sdvae-tiny:p2",
                 "--resolution", "32", "--batch-size", "1", "--repeats", "1",
                 "--warmup", "0", "--device", "cpu", "--json", str(out)]) == 0
    assert json.loads(out.read_text())[0]["tokens"] == 4
    assert main(["bench", "sdvae-tiny", "--diffusion", "dit-s",
                 "--autoencoders", "sdvae-tiny:p2"]) == 2
    assert "drop the MODEL arguments" in capsys.readouterr().err


def test_best_batch_search_stops_at_the_memory_limit():
    calls = []

    def measure(batch):  # 100 MiB per image; throughput still rising
        calls.append(batch)
        return batch / (10 * batch ** 0.5), batch * 100 * 2**20

    res = search_batch(measure, memory_limit=1000 * 2**20)
    assert calls == [1, 2, 4, 8, 16]  # 16 needs 1600 MiB: measured once, then stop
    assert res["batch"] == 8 and "limit" in res["stopped"]
    assert [t[0] for t in res["tried"] if t[1] is not None] == [1, 2, 4, 8]
    flat = search_batch(lambda b: (b / 100, 0), memory_limit=2**40)  # saturated at once
    assert flat["batch"] == 1 and flat["stopped"].startswith("saturated")
    assert search_batch(lambda b: (1.0, 2**30), memory_limit=1)["batch"] is None


def test_best_batches_fill_the_rows_and_the_table():
    settings = tiny_settings(repeats=1, warmup=0, mode_subset=("infer", "train"),
                             autoencoders=parse_autoencoders("sdvae-tiny:p2"))
    columns = build_columns(settings, progress=lambda m: None)
    report = measure_columns(columns, settings, progress=lambda m: None)
    found = best_batches(columns, settings, memory_limit=2**40, progress=lambda m: None,
                         max_batch=4)
    add_best_batches(report, found)
    (row,) = report["rows"]
    assert row["infer_best_batch"] in (1, 2, 4) and row["train_best_batch_img_s"] > 0
    assert [t[0] for t in found["sdvae-tiny:p2"]["infer"]["tried"]][0] == 1
    text = to_markdown(report)
    assert "| best training batch |" in text and "- best batch: doubled from 1" in text


def test_compiled_columns_give_the_same_outputs_as_eager():
    settings = tiny_settings(autoencoders=parse_autoencoders("sdvae-tiny:p2"))
    (col,) = build_columns(settings, progress=lambda m: None)
    col.model.eval()
    inp = make_inputs(col, settings)
    eager = infer_call(col, col.model, inp, settings, guided=True)()
    compiled = infer_call(col, compile_module(col.model, "eager"), inp, settings, guided=True)()
    assert (compiled - eager).abs().max() <= 1e-4
