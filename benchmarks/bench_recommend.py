"""Time `recommend` on a real minilm-l6 profile (vader-movie, N=64, T=64) at a 100k budget.

Prints the median of 3 runs per setting, split into the model rebuild + capture and the
search. `recommend` rebuilds the profiled model from the folder to get exact row/column
kernels, so the load of minilm-l6 (~3 s here) is part of every run.

    .venv/bin/python benchmarks/bench_recommend.py
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from ntk_advisor.advice.recommend import RecommendConfig, recommend
from ntk_advisor.profiling.capture import capture
from ntk_advisor.profiling.folder import load_profile, save_profile
from ntk_advisor.profiling.profiler import ProfileConfig, profile


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        folder = save_profile(profile(ProfileConfig(samples=64, max_length=64)), Path(scratch) / "p")
        captures = []
        for _ in range(3):
            start = time.perf_counter()
            capture(load_profile(folder))
            captures.append(time.perf_counter() - start)
        print(f"rebuild model + capture x, δ: {statistics.median(captures):.2f} s (median of 3)")
        print(f"{'method':<8}{'objective':<12}{'budget':>8}{'total s':>9}{'search s':>10}")
        for method, objective in [("rocoft", "trace"), ("rocoft", "alignment"), ("rocoft", "loo"),
                                  ("rocoft", "lambda_min"), ("lora", "trace"), ("lora", "alignment")]:
            times, searches = [], []
            for _ in range(3):
                start = time.perf_counter()
                recipe = recommend(folder, RecommendConfig(method=method, objective=objective, budget=100_000))
                times.append(time.perf_counter() - start)
                searches.append(recipe.evidence["search"]["seconds"])
            print(f"{method:<8}{objective:<12}{100_000:>8}{statistics.median(times):>9.2f}"
                  f"{statistics.median(times) - statistics.median(captures):>10.2f}")


if __name__ == "__main__":
    main()
