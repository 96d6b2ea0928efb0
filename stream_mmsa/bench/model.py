"""Model stage: latency and throughput of fusion + evaluator (CLI and benchmarks/bench_model.py).

Inputs cycle through the six missing patterns and the complete one, starting with
text missing, so batch 1 measures a window that needs the generators and the evaluator
(the gate's worst case) and larger batches mix all seven patterns.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import torch

from ..model.fusion import IMAGINE_MODES, FusionModel
from ..model.types import MODALITIES, MultimodalBatch

MOSEI_DIMS = {"text": 768, "audio": 74, "vision": 35}

PATTERNS: tuple[tuple[bool, bool, bool], ...] = (
    (False, True, True),
    (True, False, True),
    (True, True, False),
    (False, False, True),
    (False, True, False),
    (True, False, False),
    (True, True, True),
)
"""Presence (text, audio, vision) per sample, cycled: the 6 missing patterns, then complete."""


def synthetic_batch(
    input_dims: dict[str, int],
    batch_size: int,
    seq_len: int | dict[str, int],
    present: torch.Tensor | None = None,
    ragged: bool = False,
    seed: int = 0,
) -> MultimodalBatch:
    """Random features shaped like real windows (not data: for timing and tests).

    seq_len may differ per modality; ragged=True gives each sample a random true length.
    """
    gen = torch.Generator().manual_seed(seed)
    lengths = seq_len if isinstance(seq_len, dict) else dict.fromkeys(MODALITIES, seq_len)
    features, masks = {}, {}
    for m in MODALITIES:
        t = lengths[m]
        features[m] = torch.randn(batch_size, t, input_dims[m], generator=gen)
        if ragged:
            true_len = torch.randint(1, max(t, 1) + 1, (batch_size, 1), generator=gen)
            masks[m] = torch.arange(t)[None, :] < true_len
        else:
            masks[m] = torch.ones(batch_size, t, dtype=torch.bool)
    if present is None:
        present = torch.tensor([PATTERNS[i % len(PATTERNS)] for i in range(batch_size)])
    labels = torch.rand(batch_size, generator=gen) * 6.0 - 3.0
    return MultimodalBatch(features, masks, present, labels)


def benchmark_fusion(
    model: FusionModel,
    batch_sizes: Sequence[int] = (1, 32),
    seq_len: int = 50,
    repeats: int = 100,
    modes: Sequence[str] = IMAGINE_MODES,
    warmup: int = 10,
) -> list[dict[str, float | int | str]]:
    """Median wall time of one forward per (mode, batch size), in eval + inference mode.

    Runs on the model's device with the caller's thread settings. Each row holds mode,
    batch_size, seq_len, ms_per_batch (median wall), ms_per_window, windows_per_s, p90_ms,
    min_ms (the least-disturbed run, for machines shared with other work),
    cpu_ms_per_batch (median process CPU time; with one thread, the compute cost without
    other processes' contention) and imagined_rate (share of missing modalities the
    evaluator chose to imagine).
    """
    model.eval()
    device = next(model.parameters()).device
    rows: list[dict[str, float | int | str]] = []
    for batch_size in batch_sizes:
        batch = synthetic_batch(model.config.input_dims, batch_size, seq_len).to(device)
        missing = int((~batch.present).sum())
        for mode in modes:
            times, cpu = [], []
            with torch.inference_mode():
                for i in range(warmup + repeats):
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    start, start_cpu = time.perf_counter(), time.process_time()
                    out = model(batch, imagine=mode)  # type: ignore[arg-type]
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    if i >= warmup:
                        times.append(time.perf_counter() - start)
                        cpu.append(time.process_time() - start_cpu)
            median = statistics.median(times)
            rows.append(
                {
                    "mode": mode,
                    "batch_size": batch_size,
                    "seq_len": seq_len,
                    "ms_per_batch": median * 1e3,
                    "ms_per_window": median * 1e3 / batch_size,
                    "windows_per_s": batch_size / median,
                    "p90_ms": statistics.quantiles(times, n=10)[-1] * 1e3,
                    "min_ms": min(times) * 1e3,
                    "cpu_ms_per_batch": statistics.median(cpu) * 1e3,
                    "imagined_rate": int(out.imagined.sum()) / missing if missing else 0.0,
                }
            )
    return rows


def markdown_table(rows: Sequence[dict[str, float | int | str]]) -> str:
    """Rows of `benchmark_fusion` as a markdown table."""
    lines = [
        "| imagine | batch | T | ms/batch (median) | ms/window | windows/s | p90 ms/batch"
        " | min ms/batch | CPU ms/batch | imagined |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['batch_size']} | {r['seq_len']} | {r['ms_per_batch']:.2f} "
            f"| {r['ms_per_window']:.3f} | {r['windows_per_s']:.0f} | {r['p90_ms']:.2f} "
            f"| {r['min_ms']:.2f} | {r['cpu_ms_per_batch']:.2f} | {r['imagined_rate']:.2f} |"
        )
    return "\n".join(lines)


def bench_model(threads: int = 1, repeats: int = 100) -> dict:
    """Fusion + evaluator at MOSEI-sized inputs (T = 50), as the budget is stated."""
    from ..config import Config

    torch.set_num_threads(threads)
    config = Config().model.model_copy(update={"input_dims": MOSEI_DIMS})
    rows = benchmark_fusion(FusionModel(config), (1, 32), seq_len=50, repeats=repeats)
    return {"threads": threads, "rows": rows}
