"""Half-precision profiles against float32 on real weights (issue 19): do bfloat16 and float16
weights give the same kernels, row scores and advised placement?

Each dtype profiles the same probe sample and label-gradient sample of one task (same seed),
then recommends RoCoFT at two budgets and LoRA at one. Prints, per dtype against float32: the
relative Frobenius error of the total kernel, the largest relative error of a module's trace,
the smallest Spearman correlation of a module's row scores (kernel energies and label
gradient), and how much of the advised placement is the same (shared rows / ranks). One
process, one profile at a time.

    .venv/bin/python benchmarks/bench_dtype.py [--model minilm-l6] [--data vader-movie]
        [--samples 64] [--max-length 64] [--signal-samples 256] [--head probe] [--dtypes float32 bfloat16 float16]

On a CPU without native bfloat16 (these 2 cores: a bf16 matmul runs 70x slower than float32)
use small settings, e.g. --samples 32 --max-length 32 --signal-samples 64 --head random; the
GPU check (benchmarks/gpu/check.sh) runs it at full size.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from scipy.stats import spearmanr

from ntk_advisor.advice.recommend import RecommendConfig, recommend
from ntk_advisor.profiling.folder import save_profile
from ntk_advisor.profiling.profiler import ProfileConfig, profile

STUDIES = [("rocoft", 21_506), ("rocoft", 100_000), ("lora", 21_506)]


def placement(recipe) -> set:
    if recipe.method == "rocoft":
        return {(t.module, i) for t in recipe.targets for i in t.indices}
    return {(t.module, r) for t in recipe.targets for r in range(t.rank)}


def _worst_rank_agreement(scores: dict, reference: dict) -> float:
    """The smallest per-module Spearman ρ; a module whose scores are constant in either
    profile (nothing to rank) is skipped."""
    values = [spearmanr(scores[n].numpy(), reference[n].numpy())[0] for n in reference]
    return min(v for v in values if v == v)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--data", default="vader-movie")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--signal-samples", type=int, default=256)
    parser.add_argument("--head", default="probe", help="random skips the probe fit, the slowest part on a CPU "
                        "without native bfloat16")
    parser.add_argument("--dtypes", nargs="*", default=["float32", "bfloat16", "float16"])
    args = parser.parse_args(argv)
    profiles, recipes, seconds = {}, {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for dtype in args.dtypes:
            started = time.perf_counter()
            result = profile(ProfileConfig(model=args.model, data=args.data, samples=args.samples,
                                           max_length=args.max_length, dtype=dtype,
                                           signal_samples=args.signal_samples, head=args.head))
            seconds[dtype] = time.perf_counter() - started
            print(f"  {dtype}: profiled in {seconds[dtype]:.0f} s ({result.timing})", file=sys.stderr, flush=True)
            folder = save_profile(result, Path(scratch) / dtype)
            profiles[dtype] = result
            recipes[dtype] = {s: recommend(folder, RecommendConfig(method=s[0], budget=s[1])) for s in STUDIES}
    reference = profiles["float32"]
    print(f"{args.model} on {args.data}, N = {args.samples}, T = {args.max_length}, M = {args.signal_samples}, "
          f"head {args.head}, against float32\n")
    header = ("| dtype | profile s | total kernel rel. error | worst module trace rel. error | worst row-energy "
              "Spearman | worst label-gradient Spearman | " + " | ".join(f"same {m} {b:,}" for m, b in STUDIES) + " |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for dtype, result in profiles.items():
        k, k0 = result.kernels["total"], reference.kernels["total"]
        trace_error = max(abs(m.trace - m0.trace) / m0.trace for m, m0 in zip(result.modules, reference.modules))
        energy = _worst_rank_agreement(result.scores["rows"], reference.scores["rows"])
        signal = _worst_rank_agreement(result.scores["rows_signal"], reference.scores["rows_signal"])
        same = []
        for study in STUDIES:
            mine, theirs = placement(recipes[dtype][study]), placement(recipes["float32"][study])
            same.append(f"{len(mine & theirs) / len(theirs):.0%}")
        print(f"| {dtype} | {seconds[dtype]:.0f} | {float((k - k0).norm() / k0.norm()):.1e} | {trace_error:.1e} | "
              f"{energy:.3f} | {signal:.3f} | " + " | ".join(same) + " |")


if __name__ == "__main__":
    main()
