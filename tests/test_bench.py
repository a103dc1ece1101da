"""latentae bench on tiny presets: a complete table and JSON, equal outputs with the
diffusers twin, FLOP and memory counters against hand counts, and bad input."""

import json
import re

import pytest
import torch
from torch import nn

from latentae import create_model, runtime
from latentae.bench import MODES, BenchSettings, build_subjects, measure, run_bench, to_markdown
from latentae.cli import main

SETTINGS = dict(resolution=32, batch=2, warmup=0, repeats=2)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread: on a shared 2-core machine two threads can stall each other badly."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def report():
    torch.manual_seed(0)
    models = [("sdvae-tiny", create_model("sdvae-tiny")),
              ("litevae-tiny", create_model("litevae-tiny"))]
    subjects = build_subjects(models, compare="diffusers", note=lambda m: None)
    return run_bench(subjects, BenchSettings(**SETTINGS), progress=lambda m: None)


def test_report_is_complete_with_positive_numbers(report):
    res = report["results"]
    assert list(res) == ["sdvae-tiny", "diffusers:sdvae-tiny", "litevae-tiny"]
    for name, r in res.items():
        assert r["encoder_params"] > 0 and r["decoder_params"] > 0
        assert r["gflops_per_image"]["encode"] > 0 and r["gflops_per_image"]["decode"] > 0
        for mode in MODES:
            assert r[mode]["images_per_s"] > 0, (name, mode)
            assert len(r[mode]["times_s"]) == SETTINGS["repeats"]
            assert r[mode]["gflops_per_s"] > 0
            assert r[mode]["peak_memory_bytes"] is None or r[mode]["peak_memory_bytes"] >= 0
    m = report["machine"]
    assert m["matmul_float32_gflops"] > 0 and m["threads"] >= 1 and m["torch"]
    assert m["haar"]["haar_over_copy"] > 0
    json.dumps(report)  # JSON-able as is


def test_diffusers_twin_has_same_params_flops_and_outputs(report):
    ours, twin = report["results"]["sdvae-tiny"], report["results"]["diffusers:sdvae-tiny"]
    assert twin["twin_of"] == "sdvae-tiny"
    assert (ours["encoder_params"], ours["decoder_params"]) == (
        twin["encoder_params"], twin["decoder_params"])
    for part in ("encode", "decode"):
        assert ours["gflops_per_image"][part] == pytest.approx(twin["gflops_per_image"][part],
                                                               rel=1e-3)
    eq = twin["equal_outputs"]
    assert eq["equal"] and eq["encode"]["max_abs_diff"] < 1e-4
    assert "equal_outputs" not in report["results"]["litevae-tiny"]  # no twin exists


def test_markdown_has_header_rows_and_ratios(report):
    text = to_markdown(report, baseline="diffusers:sdvae-tiny")
    assert "torch" in text and " thread" in text and "float32" in text
    assert "matmul rate" in text and "Haar DWT" in text
    header = [ln for ln in text.splitlines() if ln.startswith("| |")][0]
    assert header.count("|") == 5  # label + 3 model columns
    for label in ("encoder params", "encode GFLOP/image", "encode images/s",
                  "train decode (fwd+bwd) images/s", "peak memory", "same outputs"):
        assert label in text
    assert "(1.00×)" in text
    with pytest.raises(ValueError, match="baseline"):
        to_markdown(report, baseline="nope")


def test_flop_counter_matches_a_hand_count():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    x = torch.randn(1, 3, 16, 16)
    assert measure.count_flops(lambda: conv(x)) == 2 * 8 * 3 * 9 * 16 * 16


def test_peak_memory_sees_a_large_allocation():
    n = 64 * 2**20 // 4  # 64 MiB of float32
    peak = measure.peak_memory_bytes(lambda: torch.ones(n).sum(), torch.device("cpu"))
    if peak is None:
        pytest.skip("no /proc peak-RSS reset on this platform")
    assert 48 * 2**20 < peak < 256 * 2**20


def test_cli_writes_json_and_markdown(tmp_path, capsys):
    rc = main(["bench", "sdvae-tiny", "--resolution", "32", "--batch", "1", "--warmup", "0",
               "--repeats", "1", "--modes", "encode,decode",
               "--compare", "diffusers,diffusers-default",
               "--baseline", "diffusers-default:sdvae-tiny", "--json", str(tmp_path / "b.json"),
               "--markdown", str(tmp_path / "b.md")])
    assert rc == 0
    rep = json.loads((tmp_path / "b.json").read_text())
    res = rep["results"]
    assert list(res) == ["sdvae-tiny", "diffusers:sdvae-tiny", "diffusers-default:sdvae-tiny"]
    assert "train_encode" not in res["sdvae-tiny"]
    # the default-settings twin was timed in its own process, and its outputs checked
    assert [res[n]["process"] for n in res] == ["same", "same", "default"]
    assert res["diffusers-default:sdvae-tiny"]["decode"]["images_per_s"] > 0
    assert res["diffusers-default:sdvae-tiny"]["equal_outputs"]["equal"]
    md = (tmp_path / "b.md").read_text()
    assert "Ratios in parentheses are to **diffusers-default:sdvae-tiny**" in md
    assert "fresh child process with PyTorch's defaults" in md
    assert "encode images/s" in capsys.readouterr().out


def test_default_process_child_keeps_one_call_per_dtype():
    """One child serves the float32 and the bfloat16 column of a model; each column's
    timing must run its own call (a shared one once timed bf16 for both)."""
    from latentae.bench.isolated import DefaultProcessTimer
    from latentae.bench.subjects import diffusers_twin

    twin = diffusers_twin(create_model("sdvae-tiny"))
    child = DefaultProcessTimer(twin, BenchSettings(**SETTINGS), "twin")
    try:
        for dtype in ("float32", "bfloat16"):
            timed, _ = child.prepare("encode", dtype)
            assert timed() > 0
        assert child.output_dtype("float32") == "float32"
        assert child.output_dtype("bfloat16") == "bfloat16"
    finally:
        child.close()


@pytest.mark.parametrize("argv, message", [
    (["nope-preset"], "unknown model preset|neither a model directory"),
    (["sdvae-tiny", "--modes", "encode,fly"], "unknown mode"),
    (["sdvae-tiny", "--baseline", "other"], "baseline"),
    (["sdvae-tiny", "--resolution", "36"], "not divisible"),
    (["litevae-tiny", "--compare", "diffusers"], "none of the models has a diffusers twin"),
    (["sdvae-tiny", "--compare", "diffusers,onnx"], "--compare takes"),
    (["sdvae-tiny", "--json", "/nonexistent-dir/x.json"], "/nonexistent-dir does not exist"),
    (["sdvae-tiny", "--repeats", "0"], "repeats"),
    (["sdvae-tiny", "--dtype", "float32,int8"], "unknown dtype"),
])
def test_bad_input_exits_nonzero_with_a_message(argv, message, capsys):
    rc = main(["bench", *argv, "--warmup", "0", "--repeats", "1", "--modes", "encode"]
              if "--repeats" not in argv and "--modes" not in argv else ["bench", *argv])
    err = capsys.readouterr().err
    assert rc != 0
    assert re.search(message, err), err


def test_bf16_psnr_change_is_measured(shared_data, tmp_path, capsys):
    rc = main(["bench", "sdvae-tiny", "--resolution", "32", "--batch", "1", "--warmup", "0",
               "--repeats", "1", "--modes", "encode", "--dtype", "float32,bfloat16",
               "--psnr-images", str(shared_data / "kodak24"), "--psnr-resolution", "64",
               "--psnr-limit", "2", "--json", str(tmp_path / "b.json")])
    assert rc == 0
    rep = json.loads((tmp_path / "b.json").read_text())
    assert list(rep["results"]) == ["sdvae-tiny", "sdvae-tiny@bfloat16"]
    assert rep["results"]["sdvae-tiny@bfloat16"]["encode"]["images_per_s"] > 0
    p = rep["psnr"]["sdvae-tiny"]
    assert p["images"] == 2 and p["psnr_float32"] > 0 and p["psnr_low"] > 0
    assert p["psnr_change_db"] == pytest.approx(p["psnr_low"] - p["psnr_float32"])
    assert "float32 vs bfloat16 autocast" in capsys.readouterr().out
    assert main(["bench", "sdvae-tiny", "--psnr-images", str(shared_data / "kodak24")]) != 0
    assert "pass --dtype bfloat16" in capsys.readouterr().err


def test_compile_flag_times_the_compiled_model_with_equal_outputs(tmp_path):
    # backend eager: the graph capture, without minutes of code generation on this CPU
    model = create_model("sdvae-tiny").eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    compiled = runtime.compile_module(lambda v: model.decode(model.encode(v).mode()), "eager")
    with torch.no_grad():
        assert (compiled(x) - model.decode(model.encode(x).mode())).abs().max() <= 1e-4
    out = tmp_path / "b.json"
    assert main(["bench", "sdvae-tiny", "--resolution", "32", "--batch-size", "1",
                 "--warmup", "0", "--repeats", "1", "--modes", "encode,train_decode",
                 "--device", "cpu", "--compile", "eager", "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["settings"]["compile"] == "eager"
    assert rep["results"]["sdvae-tiny"]["train_decode"]["images_per_s"] > 0


def test_the_header_says_whether_the_cpu_has_bf16_instructions(report):
    flags = open("/proc/cpuinfo").read().split()
    assert report["machine"]["cpu_bf16"] == [f for f in ("avx512_bf16", "amx_bf16")
                                             if f in flags]
    assert "CPU bf16 instructions: " in to_markdown(report)
