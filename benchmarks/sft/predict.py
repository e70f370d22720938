"""Does the SFT profile rank placements? (docs/sft.md, "Does the profile rank placements?")

For every arm of the SFT study that starts where the expected LoRA kernel holds (PEFT's
default init: B = 0 and a random A; not EVA or LoRA-GA), the profile's predictions at the
scale the arm trains at (α = r, or rsLoRA's α/√r), against the validation NLL the study
measured on seed 0 at each learning rate:

- ``first step``: 1ᵀ K_S 1 / N² over the N probe pairs, K_S the placement's expected kernel.
  For the SFT loss every residual is the same, so a first (S)GD step of rate η lowers the loss
  by about η·1ᵀ K_S 1 / τ² (docs/sft.md, "The kernel of a generative model").
- ``label signal``: the share of the SFT gradient's energy ‖G‖²_F that the placement's ranks
  can hold (Σ of each module's top-r σ², over all modules' ‖G‖²_F); the ranking rule's own
  objective.
- ``trace``: tr K_S / N, the mean self-kernel.
- ``effective rank``: exp of the entropy of K_S's normalized eigenvalues, and ``1/κ``,
  λ_min/λ_max: how evenly K_S spreads over the probe pairs (both higher for a better
  conditioned kernel; ``validate --task sft`` ranked four arms by them perfectly, on one seed).

A predictor that ranks placements has a negative Spearman ρ with the validation NLL (more
predicted progress, lower loss). Reads the study's profiles and results; trains nothing.

    .venv/bin/python benchmarks/sft/predict.py [--work runs/sft]

Writes benchmarks/sft/results/smollm2-135m-predict.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("sft_study", HERE / "run.py")
study = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(study)

FROM_B_ZERO = [arm for arm, fields in study.ARMS.items() if fields.get("training", {}).get("lora_init") is None]
PREDICTORS = ("first step", "label signal", "trace", "effective rank", "1/κ")


def arm_predictions(profile: Path) -> dict[str, dict[str, float]]:
    """{arm: {predictor: value}} for the arms that start from B = 0, at their training scale."""
    from ntk_advisor.advice.recommend import placement_kernel
    from ntk_advisor.methods import Rank
    from ntk_advisor.profiling.capture import capture
    from ntk_advisor.profiling.folder import load_profile

    captured = capture(load_profile(profile))
    found = {}
    for arm in FROM_B_ZERO:
        recipe = study.arm_recipe(profile, study.ARMS[arm], seed=0, learning_rate=1e-2, steps=study.STUDY_STEPS)
        placement = {t.module: Rank(t.rank) for t in recipe.targets}
        kernel = placement_kernel(captured, placement, "lora", recipe.training)
        n = kernel.shape[0]
        predicted = recipe.evidence["predicted"]
        found[arm] = {"first step": float(kernel.sum()) / n ** 2, "label signal": predicted["label_signal"],
                      "trace": float(kernel.trace()) / n, "effective rank": predicted["effective_rank"],
                      "1/κ": 1 / predicted["condition_number"]}
    return found


def validation_by_rate(runs: list[dict], task: str) -> dict[float, dict[str, float]]:
    """{learning rate: {arm: validation NLL}} of seed 0's runs of the study's step count."""
    found: dict[float, dict[str, float]] = {}
    for run in runs:
        if run["task"] == task and run["seed"] == 0 and run["steps"] == study.STUDY_STEPS and run["arm"] in FROM_B_ZERO:
            found.setdefault(run["learning_rate"], {})[run["arm"]] = run["validation_nll"]
    return dict(sorted(found.items()))


def spearman(xs: list[float], ys: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(xs, ys).statistic)


def task_tables(task: str, predicted: dict, measured: dict) -> list[str]:
    rates = list(measured)
    lines = [f"#### {task}", "",
             "| arm | " + " | ".join(PREDICTORS) + " | " + " | ".join(f"val NLL, lr {r:g}" for r in rates) + " |",
             "|---|" + "---|" * (len(PREDICTORS) + len(rates))]
    for arm, values in predicted.items():
        cells = [f"{values[p]:.4g}" for p in PREDICTORS]
        cells += [f"{measured[r][arm]:.4f}" if arm in measured[r] else "—" for r in rates]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += ["", "Spearman ρ of each predictor with the validation NLL, over the arms run at that rate "
              "(negative: the predictor ranks placements):", "",
              "| learning rate | arms | " + " | ".join(PREDICTORS) + " |", "|---|---|" + "---|" * len(PREDICTORS)]
    best = {arm: min(measured[r][arm] for r in rates if arm in measured[r])
            for arm in predicted if any(arm in measured[r] for r in rates)}
    for label, nll_of in [(f"{rate:g}", measured[rate]) for rate in rates] + [("each arm's best", best)]:
        arms = [arm for arm in predicted if arm in nll_of]
        if len(arms) < 4:
            continue  # a rank correlation of three points says little
        nll = [nll_of[arm] for arm in arms]
        rhos = [spearman([predicted[arm][p] for arm in arms], nll) for p in PREDICTORS]
        lines.append(f"| {label} | {len(arms)} | " + " | ".join(f"{rho:+.2f}" for rho in rhos) + " |")
    return lines + [""]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/sft"))
    args = parser.parse_args(argv)
    runs = json.loads((HERE / "results" / f"{study.MODEL}.json").read_text())["runs"]
    missing = [task for task in study.TASKS if not (args.work / task / "profile" / "profile.json").exists()]
    if missing:  # the committed table stays as it is
        print(f"no profile for {', '.join(missing)} in {args.work}: run benchmarks/sft/run.py first", file=sys.stderr)
        return 1
    lines = [f"{study.MODEL}: the profile's predictions (N = {study.SAMPLES} probe pairs, each arm at the scale it "
             f"trains at) against seed 0's validation NLL after {study.STUDY_STEPS} steps of {study.BATCH}", ""]
    for task in study.TASKS:
        lines += task_tables(task, arm_predictions(args.work / task / "profile"), validation_by_rate(runs, task))
    text = "\n".join(lines)
    print(text)
    study.write_text_atomically(HERE / "results" / f"{study.MODEL}-predict.md", text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
