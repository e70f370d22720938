"""The validation study of the README: does the profile predict fine-tuning on real tasks?

Runs `ntk-advisor validate` on real minilm-l6 for the studies below, one after another, each
a separate process; every study resumes where it stopped (finished runs are kept in --work).
Prints each study's tables, and the wall time of the 12 single-seed placements next to the
whole study's, and writes each study's to benchmarks/validate/<study>.txt.

    .venv/bin/python benchmarks/bench_validate.py [--work runs/validate] [--only vader-rocoft ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from ntk_advisor.profiling.folder import read_json

CLI = [sys.executable, "-m", "ntk_advisor.cli"]
COMMON = ["--budget", "100000", "--placements", "12", "--seeds", "1", "--key-seeds", "3", "--steps", "100",
          "--batch-size", "32", "--learning-rate", "2e-3"]
STUDIES = {
    "vader-rocoft": ["--data", "vader-movie", "--method", "rocoft", "--max-length", "48"],
    "bbc-rocoft": ["--data", "bbc-news", "--method", "rocoft", "--max-length", "64"],
    "vader-lora": ["--data", "vader-movie", "--method", "lora", "--max-length", "48",
                   "--key", "advised,lora-qv,lora-all,weight-kappa"],
    "vader-sweep": ["--data", "vader-movie", "--method", "rocoft", "--max-length", "48", "--placements", "0",
                    "--lambdas", "0,1e-3,1e-2,1e-1,1"],
}


def run_study(name: str, work: Path) -> str:
    done = subprocess.run(CLI + ["validate", "--out", str(work / name), "--model", "minilm-l6"] + COMMON
                          + STUDIES[name], capture_output=True, text=True, env={**os.environ, "COLUMNS": "150"})
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    # The run folders' own wall times, not this invocation's: a resumed study reads finished runs back.
    return (f"## {name}\n{_wall_times(work / name)}\n{done.stdout}\n"
            f"{markdown(read_json(work / name / 'validate.json'))}")


def _cell(value: float, digits: int = 2) -> str:
    return "undefined" if value != value else f"{value:+.{digits}f}"


def markdown(document: dict) -> str:
    """The README's tables: placements (mean ± sd over seeds), correlations, the λ sweep."""
    lines = []
    placements = document["placements"]
    if placements:
        common = ", ".join(document.get("common_seeds", ["seed-0"]))
        lines += [f"| placement | test accuracy ({common}) | test accuracy (all seeds) | seeds | validation | "
                  "final train loss |", "|---|---|---|---|---|---|"]
        for name in document["ranking"]:
            p = placements[name]
            acc = p["test_accuracy"]
            spread = f" ± {acc['std']:.4f}" if acc["n"] > 1 else ""
            shared = p.get("common_seeds", {}).get("test_accuracy", acc)["mean"]
            lines.append(f"| {name} | {shared:.4f} | {acc['mean']:.4f}{spread} | {acc['n']} | "
                         f"{p['validation_accuracy']['mean']:.4f} "
                         f"| {p['final_train_loss']['mean']:.3f} |")
        lines += ["", "| predictor | Spearman ρ [95% CI] | Kendall τ [95% CI] | ρ with final train loss |",
                  "|---|---|---|---|"]
        table = document["correlations"]["test_accuracy"]
        loss = document["correlations"]["final_train_loss"]
        for name in sorted(table, key=lambda n: -(table[n]["spearman"] if table[n]["spearman"] == table[n]["spearman"]
                                                   else -2)):
            c = table[name]
            lines.append(f"| {name} | {_cell(c['spearman'])} [{_cell(c['spearman_ci'][0])}, {_cell(c['spearman_ci'][1])}]"
                         f" | {_cell(c['kendall'])} [{_cell(c['kendall_ci'][0])}, {_cell(c['kendall_ci'][1])}] | "
                         f"{_cell(loss[name]['spearman'])} |")
    if document.get("sweep"):
        lines += ["", "| λ | fine-tuned test acc | linear model test acc | linearization gap | ‖θ−θ0‖ |",
                  "|---|---|---|---|---|"]
        for r in document["sweep"]:
            lines.append(f"| {r['lambda']:g} | {r['test_accuracy']:.4f} | {r['linear_model_accuracy']:.4f} | "
                         f"{r['linearization_gap']:.3f} | {r['distance_from_theta0']:.3f} |")
    return "\n".join(lines) + "\n"


def _wall_times(folder: Path) -> str:
    """Sum of run wall times: the 12 first-seed runs (the speed target) and all of them."""
    first = [read_json(p)["wall_seconds"] for p in folder.glob("runs/*/seed-0/metrics.json")]
    every = [read_json(p)["wall_seconds"] for p in folder.glob("**/metrics.json")]
    profile = read_json(folder / "profile" / "profile.json")["timing"].get("total_s", float("nan"))
    return (f"profile {profile:.0f} s; {len(first)} placements x 1 seed: {sum(first) / 60:.1f} min of training; "
            f"all {len(every)} runs: {sum(every) / 60:.1f} min")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("runs/validate"))
    parser.add_argument("--only", nargs="*", choices=list(STUDIES), default=list(STUDIES))
    args = parser.parse_args()
    folder = Path(__file__).parent / "validate"
    folder.mkdir(exist_ok=True)
    for name in args.only:
        section = run_study(name, args.work)
        print(section, flush=True)
        (folder / f"{name}.txt").write_text(section)


if __name__ == "__main__":
    main()
