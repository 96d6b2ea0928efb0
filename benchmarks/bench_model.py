"""Fusion + evaluator latency and throughput on CPU (DESIGN.md performance budget).

Budget: <= 7 ms per window at batch 1 and >= 900 windows/s at batch 32 with 2 threads,
MOSEI-sized windows (T = 50 per modality). Prints a markdown table per text width, with
the machine's load average, because shared machines make timings noisy.

    python benchmarks/bench_model.py                      # fresh model, text 768 and 384
    python benchmarks/bench_model.py --checkpoint model.pt
"""

from __future__ import annotations

import argparse
import os
import platform

import torch

from stream_mmsa.bench.model import benchmark_fusion, markdown_table
from stream_mmsa.model.checkpoint import load_checkpoint
from stream_mmsa.model.config import ModelConfig
from stream_mmsa.model.fusion import FusionModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="benchmark this checkpoint instead of a fresh model")
    parser.add_argument("--text-dims", type=int, nargs="+", default=[768, 384])
    parser.add_argument("--audio-dim", type=int, default=74)
    parser.add_argument("--vision-dim", type=int, default=35)
    parser.add_argument("--seq-len", type=int, default=50)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.repeats < 2:
        parser.error("--repeats must be at least 2")

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models: list[tuple[str, FusionModel]] = []
    if args.checkpoint:
        model, _ = load_checkpoint(args.checkpoint, map_location=args.device)
        models.append((args.checkpoint, model))
    else:
        for text_dim in args.text_dims:
            dims = {"text": text_dim, "audio": args.audio_dim, "vision": args.vision_dim}
            models.append((f"fresh, dims {dims}", FusionModel(ModelConfig(input_dims=dims))))

    print(
        f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or 'cpu'}, "
        f"device {args.device}"
    )
    for name, model in models:
        model.to(args.device)
        params = sum(p.numel() for p in model.parameters())
        load_before = os.getloadavg()[0]
        rows = benchmark_fusion(
            model, args.batch_sizes, args.seq_len, args.repeats, warmup=args.warmup
        )
        load_after = os.getloadavg()[0]
        print(f"\n### {name}: {params:,} parameters")
        print(f"load average (1 min) before {load_before:.2f}, after {load_after:.2f}\n")
        print(markdown_table(rows))


if __name__ == "__main__":
    main()
