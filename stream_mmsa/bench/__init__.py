"""Benchmarks, one module per stage (model, face, acoustic, asr, engine); `suite` runs them
for `stream-mmsa bench`, and benchmarks/ and scripts/ call the stage modules directly."""

from .suite import markdown, run_bench

__all__ = ["markdown", "run_bench"]
