"""The validate.json document: measured next to predicted, correlations, ranking and the λ sweep.

Pure bookkeeping over finished runs (no model, no training), so it can be recomputed from a
study folder at any time and tested on synthetic numbers.
"""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np

from ..ntk.select import OBJECTIVES
from .correlate import rank_correlation

MEASURES = ("test_accuracy", "validation_accuracy", "final_train_loss")
# Predicted figures correlated with the measured accuracy: every objective's value of K_S
# (higher is better by construction) and the profile's summaries.
PREDICTORS = tuple(f"objective:{o}" for o in OBJECTIVES) + ("loo_accuracy", "effective_rank", "distance_to_full",
                                                            "label_signal")


def measured(metrics: dict) -> dict:
    curve = metrics.get("loss_curve") or [math.nan]
    return {"test_accuracy": metrics["test"]["accuracy"], "validation_accuracy": metrics["validation_best"]["accuracy"],
            "final_train_loss": float(np.mean(curve[-10:])), "linearization_gap": metrics.get("linearization_gap"),
            "distance_from_theta0": metrics.get("distance_from_theta0"), "wall_seconds": metrics.get("wall_seconds"),
            "trainable_parameters": metrics.get("trainable_parameters")}


def predictor_values(predicted: dict) -> dict[str, float]:
    """Flatten a placement's predicted report into the predictors correlated with accuracy."""
    values = {}
    for name in PREDICTORS:
        if name.startswith("objective:"):
            values[name] = predicted.get("objectives", {}).get(name.split(":", 1)[1], math.nan)
        else:
            values[name] = predicted.get(name, math.nan)
    return {k: float(v) if v is not None else math.nan for k, v in values.items()}


def _mean_spread(values: list[float]) -> dict:
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    if len(arr) == 0:
        return {"mean": math.nan, "std": math.nan, "sem": math.nan, "n": 0}
    std = float(arr.std(ddof=1)) if len(arr) > 1 else math.nan
    return {"mean": float(arr.mean()), "std": std, "sem": std / math.sqrt(len(arr)) if len(arr) > 1 else math.nan,
            "n": int(len(arr))}


def summarize(config, plan: dict, results: dict[str, dict], linear: dict | None) -> dict:
    """``results`` maps a run folder relative to the study (runs/<name>/seed-<s>) to its metrics."""
    placements = {}
    for name, entry in plan["placements"].items():
        runs = {path: measured(metrics) for path, metrics in results.items() if path.startswith(f"runs/{name}/")}
        if not runs:
            continue
        placements[name] = {
            "method": entry["method"], "kind": entry["kind"], "objective": entry["objective"],
            "weights": entry["predicted"]["weights"], "predictors": predictor_values(entry["predicted"]),
            "runs": runs,
            **{m: _mean_spread([r[m] for r in runs.values()]) for m in MEASURES + ("linearization_gap",)},
        }
    names = list(placements)
    # Rank and correlate on the training seeds every placement ran: a seed moves all arms
    # together, so a mean over 3 seeds next to a single seed-0 run compares seeds, not arms.
    common = sorted(set.intersection(*(set(map(_seed_of, placements[n]["runs"])) for n in names))) if names else []
    for name in names:  # no seed shared by all: fall back to every run
        shared = [r for path, r in placements[name]["runs"].items() if not common or _seed_of(path) in common]
        placements[name]["common_seeds"] = {m: _mean_spread([r[m] for r in shared]) for m in MEASURES}
    correlations = {}
    if len(names) >= 3:
        for measure in MEASURES:  # final_train_loss: does the kernel predict how fast training goes?
            target = [placements[n]["common_seeds"][measure]["mean"] for n in names]
            correlations[measure] = {
                p: rank_correlation([placements[n]["predictors"][p] for n in names], target,
                                    resamples=config.resamples, seed=config.seed)
                for p in placements[names[0]]["predictors"]}
    ranking = sorted(names, key=lambda n: -placements[n]["common_seeds"]["test_accuracy"]["mean"])
    reference = "advised" if "advised" in placements else (names[0] if names else None)
    paired = {n: paired_difference(placements[reference]["runs"], placements[n]["runs"])
              for n in names if n != reference} if reference else {}
    document = {"settings": asdict(config), "budget": plan["budget"], "head_parameters": plan["head"],
                "duplicates": plan["duplicates"], "placements": placements, "correlations": correlations,
                "ranking": ranking, "common_seeds": common, "paired_reference": reference,
                "paired": {n: d for n, d in paired.items() if d["n"] >= 2}}
    if linear is not None:
        document["sweep"] = _sweep(config, results, linear)
    return document


def _seed_of(run_path: str) -> str:
    return run_path.rsplit("/", 1)[-1]  # runs/<placement>/seed-<s>


def paired_difference(runs_a: dict, runs_b: dict, measure: str = "test_accuracy") -> dict:
    """a − b over the training seeds both arms ran (same seed: same data order and head init).

    Pairing removes the seed's share of the variance; the standard error is sd(d)/√n.
    """
    a = {_seed_of(p): r[measure] for p, r in runs_a.items()}
    b = {_seed_of(p): r[measure] for p, r in runs_b.items()}
    return _mean_spread([a[s] - b[s] for s in sorted(set(a) & set(b))])


def _sweep(config, results: dict[str, dict], linear: dict) -> list[dict]:
    rows = []
    for lam in config.lambdas:
        metrics = results.get(f"sweep/lambda-{lam:g}")
        if metrics is None:
            continue
        m = measured(metrics)
        rows.append({"lambda": lam, "test_accuracy": m["test_accuracy"], "linearization_gap": m["linearization_gap"],
                     "distance_from_theta0": m["distance_from_theta0"],
                     "linear_model_accuracy": linear["accuracy"].get(f"{lam:g}")})
    return rows


def best_predictor(document: dict, measure: str = "test_accuracy") -> tuple[str, float] | None:
    """The predictor with the highest Spearman ρ for ``measure``, or None without correlations."""
    table = document.get("correlations", {}).get(measure)
    if not table:
        return None
    finite = {p: c["spearman"] for p, c in table.items() if c["spearman"] == c["spearman"]}
    if not finite:
        return None
    name = max(finite, key=finite.get)
    return name, finite[name]
