"""Does the default advice beat the default placements? Issue 9's comparison, in one command.

Real minilm-l6, 100 steps per run, the same training settings for every arm. Each study is an
`ntk-advisor validate` folder under --work, so an interrupted benchmark resumes where it stopped
(finished runs are read back, not redone):

    vader-20k, bbc-20k     RoCoFT at 21,506 trainable parameters (one row of every block Linear,
                           plus the head): 12 placements for the rank correlation, and 3 training
                           seeds for advised, first-k, wanda-max, weight-kappa and random
    vader-lora-20k         LoRA: advised vs lora-qv vs lora-all, 3 seeds each
    vader-100k, bbc-100k   RoCoFT at 100,000: the five arms, 3 seeds each
    *-100k-uniform         the same with --allocation uniform (the same number of rows in every
                           module) for the advised arm; the baseline arms are trained again in
                           their own folder (training is deterministic: the same numbers)
    stability              the advised placement from 3 probe seeds (each seed draws its own split,
                           probe sample and probe head): Jaccard overlap of the chosen rows, with
                           the label-gradient row scores (default) and without (--signal-samples 0)

Prints per study each arm's mean ± standard error, the paired difference advised − arm (same
training seeds) with its standard error, and the Spearman ρ of label_signal and of the default
objective over the 12 placements; writes the
tables to benchmarks/advice/<study>.txt.

    .venv/bin/python benchmarks/bench_advice.py [--work runs/advice] [--only vader-20k ...]
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import yaml

from ntk_advisor.advice.recommend import DEFAULT_OBJECTIVE
from ntk_advisor.study.summary import best_predictor
from ntk_advisor.profiling.folder import read_json

CLI = [sys.executable, "-m", "ntk_advisor.cli"]
COMMON = ["--model", "minilm-l6", "--steps", "100", "--batch-size", "32", "--learning-rate", "2e-3",
          "--samples", "64"]
ARMS = "advised,first-k,wanda-max,weight-kappa,random"
DATA = {"vader": ["--data", "vader-movie", "--max-length", "48"], "bbc": ["--data", "bbc-news", "--max-length", "64"]}
SMALL = "21506"
STUDIES = {
    "vader-20k": DATA["vader"] + ["--budget", SMALL, "--placements", "12", "--seeds", "1", "--key-seeds", "3",
                                  "--key", ARMS],
    "bbc-20k": DATA["bbc"] + ["--budget", SMALL, "--placements", "12", "--seeds", "1", "--key-seeds", "3",
                              "--key", ARMS],
    "vader-lora-20k": DATA["vader"] + ["--method", "lora", "--budget", SMALL, "--arms", "advised,lora-qv,lora-all",
                                       "--seeds", "3"],
    "vader-100k": DATA["vader"] + ["--budget", "100000", "--arms", ARMS, "--seeds", "3"],
    "bbc-100k": DATA["bbc"] + ["--budget", "100000", "--arms", ARMS, "--seeds", "3"],
}
for _data in ("vader", "bbc"):
    STUDIES[f"{_data}-100k-uniform"] = STUDIES[f"{_data}-100k"] + ["--allocation", "uniform"]
STABILITY_SEEDS = (0, 1, 2)


def run_study(name: str, work: Path) -> str:
    done = subprocess.run(CLI + ["validate", "--out", str(work / name)] + COMMON + STUDIES[name],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "150"})
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    return f"## {name}\n\n{comparison(read_json(work / name / 'validate.json'))}"


def _pts(value: float) -> str:
    return "n/a" if value != value else f"{100 * value:+.1f}"


def comparison(document: dict) -> str:
    """Arms with 2+ seeds: mean ± SE, paired advised − arm; then the default predictor's ρ."""
    placements, paired = document["placements"], document.get("paired", {})
    reference = document.get("paired_reference", "advised")
    arms = sorted((n for n in placements if placements[n]["test_accuracy"]["n"] >= 2),
                  key=lambda n: -placements[n]["test_accuracy"]["mean"])
    lines = [f"| arm | test accuracy (mean ± SE) | seeds | {reference} − arm, points (± SE) |", "|---|---|---|---|"]
    for name in arms:
        acc = placements[name]["test_accuracy"]
        d = paired.get(name)
        diff = "—" if name == reference else (f"{_pts(d['mean'])} ± {100 * d['sem']:.1f}" if d else "n/a")
        lines.append(f"| {name} | {acc['mean']:.4f} ± {acc['sem']:.4f} | {acc['n']} | {diff} |")
    rivals = [n for n in arms if n != reference and placements[n]["method"] == placements[reference]["method"]]
    if rivals and reference in placements:
        best = max(rivals, key=lambda n: placements[n]["test_accuracy"]["mean"])
        d = paired.get(best, {"mean": math.nan, "sem": math.nan})
        verdict = "mean difference of at least 1 point" if d["mean"] >= 0.01 else "mean difference under 1 point"
        errors = f"{d['mean'] / d['sem']:.1f} standard errors from 0" if d["sem"] > 0 else "no spread over seeds"
        lines.append(f"\nbest rival (highest mean): {best}; {reference} − {best} = {_pts(d['mean'])} ± "
                     f"{100 * d['sem']:.1f} points ({errors}): {verdict}")
    table = document["correlations"].get("test_accuracy", {})
    if len(placements) >= 12 and table:
        # label_signal is what picks the advised rows; the objective only spends what coverage leaves.
        for name in ("label_signal", f"objective:{DEFAULT_OBJECTIVE}"):
            c = table.get(name)
            if c:
                lines.append(f"predictor {name}: Spearman ρ {c['spearman']:+.2f} [{c['spearman_ci'][0]:+.2f}, "
                             f"{c['spearman_ci'][1]:+.2f}] over {c['n']} placements")
        best = best_predictor(document)  # the useful sign: distance_to_full counts when ρ < 0
        lines.append(f"best predictor: {best[0] if best else 'none (no ρ is defined)'}")
    return "\n".join(lines) + "\n"


def _chosen_rows(recipe_path: Path) -> set[tuple[str, str, int]]:
    recipe = yaml.safe_load(recipe_path.read_text())
    return {(t["module"], t["axis"], i) for t in recipe["targets"] for i in t["indices"]}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def stability(work: Path, budget: str = SMALL) -> str:
    """Advised rows from 3 probe seeds, with and without the label-gradient row scores, and a
    random placement's rows per seed for scale."""
    lines = ["| data | budget | placement | Jaccard of seed pairs (0-1, 0-2, 1-2) | mean |", "|---|---|---|---|---|"]
    variants = {"advised": ("profile", []), "advised, probe-only scores": ("profile-no-signal", ["--signal-samples", "0"]),
                "random": ("profile", [])}
    for data, options in DATA.items():
        chosen = {}
        for seed in STABILITY_SEEDS:
            folder = work / "stability" / data / f"seed-{seed}"
            for variant, (profile, extra) in variants.items():
                if not (folder / profile / "profile.json").exists():
                    _cli(["profile", "--out", str(folder / profile), "--model", "minilm-l6", "--samples", "64",
                          "--seed", str(seed), "--force"] + options + extra)
                recipe = folder / f"{variant.replace(', ', '-').replace(' ', '-')}.yaml"
                if not recipe.exists():
                    _cli(["recommend", str(folder / profile), "--budget", budget, "--placement",
                          "random" if variant == "random" else "advised", "--seed", str(seed), "--out", str(recipe)])
                chosen[variant, seed] = _chosen_rows(recipe)
        for variant in variants:
            pairs = [jaccard(chosen[variant, a], chosen[variant, b])
                     for a, b in itertools.combinations(STABILITY_SEEDS, 2)]
            lines.append(f"| {data} | {budget} | {variant} | {', '.join(f'{p:.2f}' for p in pairs)} | "
                         f"{sum(pairs) / len(pairs):.2f} |")
    return "## stability\n\n" + "\n".join(lines) + "\n"


def _cli(arguments: list[str]) -> None:
    done = subprocess.run(CLI + arguments, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(arguments[:3])} failed:\n{done.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("runs/advice"))
    order = ["vader-20k", "bbc-20k", "stability", "vader-lora-20k", "vader-100k", "bbc-100k", "vader-100k-uniform",
             "bbc-100k-uniform"]
    parser.add_argument("--only", nargs="*", choices=order, default=order)
    args = parser.parse_args()
    folder = Path(__file__).parent / "advice"
    folder.mkdir(exist_ok=True)
    for name in args.only:
        section = stability(args.work) if name == "stability" else run_study(name, args.work)
        print(section, flush=True)
        (folder / f"{name}.txt").write_text(section)


if __name__ == "__main__":
    main()
