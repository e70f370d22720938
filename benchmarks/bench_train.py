"""Train arms at the same ~100k budget on real minilm-l6 + vader-movie and compare them.

Each run is a separate `ntk-advisor train` process (so peak memory is its own), with the same
steps, batch, max length and seed set. Prints two tables: speed / memory / optimizer state
per method, and test accuracy (mean ± standard error over seeds) of the advised RoCoFT
placement against first-k and lora-qv. Finished runs are kept in --work and not redone.

    .venv/bin/python benchmarks/bench_train.py [--steps 120] [--seeds 0 1 2] [--work runs/bench]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from ntk_advisor.advice.recommend import RecommendConfig, recommend
from ntk_advisor.profiling.folder import save_profile
from ntk_advisor.profiling.profiler import ProfileConfig, profile
from ntk_advisor.recipe.io import save_recipe

BUDGET = 100_000
CLI = [sys.executable, "-m", "ntk_advisor.cli"]


def make_recipes(work: Path, max_length: int) -> dict[str, Path]:
    folder = work / "profile"
    if not folder.exists():
        save_profile(profile(ProfileConfig(samples=64, max_length=max_length)), folder)
    plans = {
        "rocoft-rows advised": RecommendConfig(budget=BUDGET),
        "rocoft-rows first-k": RecommendConfig(budget=BUDGET, placement="first-k"),
        "rocoft-cols first-k": RecommendConfig(budget=BUDGET, placement="first-k", axis="cols"),
        "lora-qv": RecommendConfig(method="lora", budget=BUDGET, placement="lora-qv"),
        "lora advised": RecommendConfig(method="lora", budget=BUDGET),
        "full (all Linear weights)": RecommendConfig(budget=10**9, placement="first-k"),
    }
    paths = {}
    for name, config in plans.items():
        path = work / (name.split(" (")[0].replace(" ", "_") + ".yaml")
        if not path.exists():
            save_recipe(recommend(folder, config), path)
        paths[name] = path
    return paths


def run(recipe: Path, out: Path, seed: int, steps: int, max_length: int, lr: float) -> dict:
    if not (out / "metrics.json").exists():
        subprocess.run(CLI + ["train", str(recipe), f"training.max_steps={steps}", f"training.seed={seed}",
                              f"training.learning_rate={lr}", f"data.max_length={max_length}",
                              "training.checkpoint_every=1000", "--out", str(out), "--force"], check=True,
                       stdout=subprocess.DEVNULL)
    return json.loads((out / "metrics.json").read_text())


def mean_se(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values) / len(values) ** 0.5:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument("--work", type=Path, default=Path("runs/bench-train"))
    parser.add_argument("--speed-steps", type=int, default=30, help="steps of the separate speed/memory runs")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    recipes = make_recipes(args.work, args.max_length)
    rates = {"lora": 4e-3, "full": 5e-5}  # LoRA as in [LIN]; full fine-tuning needs a small step
    results: dict[str, list[dict]] = {}
    for name, path in recipes.items():
        seeds = args.seeds if name in ("rocoft-rows advised", "rocoft-rows first-k", "lora-qv") else args.seeds[:1]
        lr = next((v for k, v in rates.items() if name.startswith(k)), 2e-3)
        results[name] = [run(path, args.work / f"{path.stem}-s{s}", s, args.steps, args.max_length, lr) for s in seeds]
        print(f"done: {name}", file=sys.stderr)

    # Speed and memory from separate short runs, one after another, so no run shares the cores.
    speed = {name: run(path, args.work / f"speed-{path.stem}", args.seeds[0], args.speed_steps, args.max_length,
                       next((v for k, v in rates.items() if name.startswith(k)), 2e-3))
             for name, path in recipes.items()}
    print(f"minilm-l6 + vader-movie, batch 32, max length {args.max_length}, budget ~{BUDGET:,}. Speed and memory: "
          f"median step of a {args.speed_steps}-step run; validation accuracy after {args.steps} steps (seed "
          f"{args.seeds[0]})")
    print(f"{'method':<27}{'trainable':>11}{'s/step':>8}{'step RSS MiB':>14}{'opt. state B':>13}{'B/param':>9}"
          f"{'val acc':>9}")
    for name, runs in results.items():
        m, fast = runs[0], speed[name]
        print(f"{name:<27}{m['trainable_parameters']:>11,}{fast['seconds_per_step_median']:>8.3f}"
              f"{fast['peak_train_step_rss_bytes'] / 2**20:>14.0f}{m['optimizer_state_bytes']:>13,}"
              f"{m['optimizer_state_bytes'] / m['trainable_parameters']:>9.1f}{m['validation_best']['accuracy']:>9.4f}")
    print(f"\ntest accuracy over seeds {args.seeds} (mean ± standard error)")
    base = {s: r["test"]["accuracy"] for s, r in zip(args.seeds, results["rocoft-rows first-k"])}
    for name in ("rocoft-rows advised", "rocoft-rows first-k", "lora-qv"):
        accs = [r["test"]["accuracy"] for r in results[name]]
        diffs = [a - base[s] for s, a in zip(args.seeds, accs)]
        print(f"{name:<27}{mean_se(accs):>20}   paired diff vs first-k {mean_se(diffs)}"
              f"   linearization gap {statistics.mean(r['linearization_gap'] for r in results[name]):.3f}")


if __name__ == "__main__":
    main()
