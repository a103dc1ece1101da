"""The child process of a ``diffusers-default:`` bench column (``bench/isolated.py``):
``python -m latentae.bench.child SPEC`` loads the diffusers twin saved in ``SPEC["path"]``
with PyTorch's defaults and answers ``prepare``/``time``/``peak`` requests on stdin, one
JSON line each, with tagged JSON lines on stdout."""

from __future__ import annotations

import dataclasses
import json
import sys

import torch

from latentae.bench import measure, runner
from latentae.bench.isolated import TAG
from latentae.bench.subjects import diffusers_subject


def _answer(kind: str, value=None) -> None:
    print(TAG + json.dumps([kind, value]), flush=True)


def main(spec: dict) -> None:
    """Child main loop: load the twin, then answer prepare/time/peak requests."""
    try:
        torch.set_num_threads(spec["threads"])
        import diffusers  # deferred: a heavy optional dependency, only for --compare

        vae = getattr(diffusers, spec["cls"]).from_pretrained(
            spec["path"], local_files_only=True, low_cpu_mem_usage=False)
        cfg = {**spec["cfg"], "modes": tuple(spec["cfg"]["modes"]), "tune_allocator": False}
        settings = runner.BenchSettings(**cfg)
        subject = diffusers_subject(vae.eval(), spec["name"])
        device = torch.device(settings.device)
        runner.place_module(subject, settings)
    except Exception as e:  # report, do not leave the parent waiting
        _answer("error", f"{type(e).__name__}: {e}")
        return
    _answer("ok")
    fns = {}  # dtype -> the prepared call of the current mode
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            if msg[0] == "stop":
                return
            if msg[0] == "prepare":
                s = dataclasses.replace(subject, dtype=msg[2])
                fns[msg[2]] = runner.prepared_call(s, msg[1], settings)
                _answer("ok")
            elif msg[0] == "time":
                _answer("ok", measure.time_once(fns[msg[1]], device))
            elif msg[0] == "peak":
                _answer("ok", measure.peak_memory_bytes(fns[msg[1]], device))
            elif msg[0] == "output_dtype":
                out = fns[msg[1]]()
                _answer("ok", None if out is None else str(out.dtype).removeprefix("torch."))
        except Exception as e:
            _answer("error", f"{type(e).__name__}: {e}")


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
