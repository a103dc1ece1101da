"""Benchmarks: params, GFLOPs, throughput (inference and training step) and peak memory
of latentae models side by side with their diffusers twins (``latentae bench``)."""

from latentae.bench.report import to_markdown, write_report
from latentae.bench.runner import MODES, BenchSettings, build_subjects, run_bench

__all__ = ["MODES", "BenchSettings", "build_subjects", "run_bench", "to_markdown",
           "write_report"]
