"""How finely the suite's test splits resolve a paired gain: the runs of an advised arm and a
default at their tuned learning rates (every recorded seed) are trained again (training is
deterministic; each run's test accuracy must equal the recorded one), their per-example test
predictions read back from the saved adapters, and the paired gain resampled over test
examples (a paired bootstrap: the same examples for both arms and every seed).

The seeds' standard error, which the suite's tables report, measures training noise on one
fixed test split; the bootstrap interval adds the sampling of that split, which every seed
shares. A task's "harm" is resolved only where the interval lies below -0.5 points.

    .venv/bin/python benchmarks/suite/test_noise.py                        # the cells named in CELLS
    .venv/bin/python benchmarks/suite/test_noise.py --cells rocoft-21.5k:bbc-first-sentence:first-k
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import DEFAULT_ARM, STUDIES, arm_recipe, profile_folder, trained_metrics  # noqa: E402
from tables import tuned  # noqa: E402

# study:task:default — the cells whose tuned-rate gain missed "do no harm" on test (docs/suite.md)
CELLS = ("rocoft-21.5k:bbc-first-sentence:first-k", "lora-21.5k:vader-movie:lora-mlp",
         "lora-21.5k:vader-movie-3class:lora-qv")


def per_example_correct(recipe, folder: Path) -> np.ndarray:
    """1 where the run's saved adapter classifies a test example right, else 0 (test order)."""
    import torch

    from ntk_advisor.inputs import data as data_lib
    from ntk_advisor.tasks import get_task
    from ntk_advisor.training.apply import load_adapter
    from ntk_advisor.training.theta0 import load_for_recipe

    task = get_task(recipe.model.task)
    splits = data_lib.split_dataset(task.read_data(recipe), seed=recipe.data.seed)
    loaded, _ = load_for_recipe(recipe, splits.train.label_names, splits=splits)
    outputs = task.outputs_model(load_adapter(loaded.backbone, folder / "adapter")).eval()
    predicted = []
    with torch.no_grad():
        for start in range(0, len(splits.test), 64):
            idx = range(start, min(start + 64, len(splits.test)))
            predicted.append(outputs(**loaded.encode([splits.test.texts[i] for i in idx],
                                                     recipe.data.max_length)).argmax(-1))
    return (torch.cat(predicted).numpy() == np.asarray(splits.test.labels)).astype(np.float64)


def cell(results: dict, work: Path, study: str, task: str, default: str, draws: int, seed: int) -> dict:
    method, budget, arms = STUDIES[study]
    found = tuned(results["runs"], study)[task]
    profile = profile_folder(work, results["model"], task)
    correct: dict[str, dict[int, np.ndarray]] = {}
    for arm in (DEFAULT_ARM, default):
        rate, _, tests = found[arm]
        correct[arm] = {}
        for s, recorded in tests.items():
            recipe = arm_recipe(profile, method, budget, arms[arm], s, rate)
            metrics, folder = trained_metrics(recipe, work / results["model"] / task)
            assert metrics["test"]["accuracy"] == recorded, f"{task} {arm} seed {s}: not the recorded run"
            correct[arm][s] = per_example_correct(recipe, folder)
            assert abs(correct[arm][s].mean() - recorded) < 1e-9, "the adapter does not reproduce the run"
    seeds = sorted(set(correct[DEFAULT_ARM]) & set(correct[default]))
    diffs = np.stack([correct[DEFAULT_ARM][s] - correct[default][s] for s in seeds])  # (seeds, test examples)
    per_seed = 100 * diffs.mean(1)
    rng = np.random.default_rng(seed)
    examples = diffs.shape[1]
    resampled = np.array([100 * diffs[:, rng.integers(0, examples, examples)].mean() for _ in range(draws)])
    low, high = np.quantile(resampled, [0.05, 0.95])
    return {"study": study, "task": task, "default": default, "seeds": len(seeds), "test_examples": examples,
            "gain": float(per_seed.mean()), "seed_se": float(per_seed.std(ddof=1) / len(seeds) ** 0.5),
            "low": float(low), "high": float(high), "discordant": float((diffs != 0).mean())}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--cells", nargs="*", default=list(CELLS))
    parser.add_argument("--work", type=Path, default=Path("runs/suite"))
    parser.add_argument("--draws", type=int, default=4000)
    args = parser.parse_args(argv)
    results = json.loads((HERE / "results" / f"{args.model}.json").read_text())
    rows = [cell(results, args.work, *name.split(":"), draws=args.draws, seed=0) for name in args.cells]
    (HERE / "results" / f"{args.model}-test-noise.json").write_text(json.dumps(rows, indent=1) + "\n")
    print("| study | task | advised − default at tuned rates, test points | ± SE over seeds | 90 % interval over "
          "test examples (paired bootstrap) | test examples | examples the two arms disagree on |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['study']} | {r['task']} | {r['gain']:+.2f} vs {r['default']} ({r['seeds']} seeds) | "
              f"{r['seed_se']:.2f} | {r['low']:+.1f} to {r['high']:+.1f} | {r['test_examples']} | "
              f"{100 * r['discordant']:.1f} % |")


if __name__ == "__main__":
    main()
