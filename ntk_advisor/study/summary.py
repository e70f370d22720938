"""The validate.json document: measured next to predicted, correlations, ranking and the λ sweep.

Pure bookkeeping over finished runs (no model, no training), so it can be recomputed from a
study folder at any time and tested on synthetic numbers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..ntk.select import LABELLED_OBJECTIVES, OBJECTIVES
from .correlate import rank_correlation


# Predictors for which less is better (a placement close to the full kernel has a small distance);
# every other one, objectives included, is signed so that more is better.
LESS_IS_BETTER = ("distance_to_full",)


@dataclass(frozen=True)
class Outcome:
    """What a study measures for its task, and which way is better."""

    metric: str  # the key of a run's test and best-validation metrics: "accuracy" or "nll"
    higher_is_better: bool
    label: str  # the test measure in words, for tables and figures
    short: str  # its column name: "acc" or "NLL"
    predictors: tuple[str, ...]  # predicted figures (predictor_values' keys) that exist for the task
    headline: tuple[str, str]  # the two predictors tables show next to the measures

    @property
    def test(self) -> str:
        """The measure placements are ranked and paired on."""
        return f"test_{self.metric}"

    @property
    def validation(self) -> str:
        return f"validation_{self.metric}"

    @property
    def direction(self) -> int:
        """+1 when more of the measure is better, −1 when less is."""
        return 1 if self.higher_is_better else -1

    @property
    def measures(self) -> tuple[str, ...]:
        """Each is rank-correlated with every predictor; final_train_loss asks whether the kernel
        predicts how fast training goes."""
        return self.test, self.validation, "final_train_loss"

    def useful_sign(self, predictor: str) -> int:
        """The sign of Spearman ρ between ``predictor`` and the test measure when the predictor
        ranks placements as fine-tuning does: + for accuracy, − for NLL, flipped for a
        predictor in LESS_IS_BETTER."""
        return -self.direction if predictor in LESS_IS_BETTER else self.direction


# Every objective's value of K_S and the profile's summaries.
CLASSIFY = Outcome("accuracy", True, "test accuracy", "acc",
                   tuple(f"objective:{o}" for o in OBJECTIVES)
                   + ("loo_accuracy", "effective_rank", "distance_to_full", "label_signal"),
                   ("objective:alignment", "loo_accuracy"))
# SFT has no labels: no alignment or LOO accuracy; instead 1ᵀK_S1/N², proportional to the first
# gradient step's loss decrease (docs/sft.md); the label signal is the share of the SFT gradient's
# energy the placement can hold.
SFT = Outcome("nll", False, "test completion NLL", "NLL",
              tuple(f"objective:{o}" for o in OBJECTIVES if o not in LABELLED_OBJECTIVES)
              + ("first_step", "effective_rank", "distance_to_full", "label_signal"),
              ("first_step", "label_signal"))


def outcome_for(labelled: bool) -> Outcome:
    """Accuracy for a task with labels; completion NLL for one without (supervised fine-tuning)."""
    return CLASSIFY if labelled else SFT


def document_outcome(document: dict) -> Outcome:
    """The outcome a validate.json was summarized for (studies before SFT: classification)."""
    return SFT if document.get("primary") == SFT.test else CLASSIFY


def measured(metrics: dict, outcome: Outcome = CLASSIFY) -> dict:
    curve = metrics.get("loss_curve") or [math.nan]
    return {outcome.test: metrics["test"][outcome.metric],
            outcome.validation: metrics["validation_best"][outcome.metric],
            "final_train_loss": float(np.mean(curve[-10:])), "linearization_gap": metrics.get("linearization_gap"),
            "distance_from_theta0": metrics.get("distance_from_theta0"), "wall_seconds": metrics.get("wall_seconds"),
            "trainable_parameters": metrics.get("trainable_parameters")}


def predictor_values(predicted: dict, outcome: Outcome = CLASSIFY) -> dict[str, float]:
    """Flatten a placement's predicted report into the predictors correlated with the outcome."""
    values = {}
    for name in outcome.predictors:
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
    outcome = outcome_for(config.labelled)
    placements = {}
    for name, entry in plan["placements"].items():
        runs = {path: measured(metrics, outcome) for path, metrics in results.items()
                if path.startswith(f"runs/{name}/")}
        if not runs:
            continue
        placements[name] = {
            "method": entry["method"], "kind": entry["kind"], "objective": entry["objective"],
            "weights": entry["predicted"]["weights"], "predictors": predictor_values(entry["predicted"], outcome),
            "runs": runs,
            **{m: _mean_spread([r[m] for r in runs.values()]) for m in outcome.measures + ("linearization_gap",)},
        }
    names = list(placements)
    # Rank and correlate on the training seeds every placement ran: a seed moves all arms
    # together, so a mean over 3 seeds next to a single seed-0 run compares seeds, not arms.
    common = sorted(set.intersection(*(set(map(_seed_of, placements[n]["runs"])) for n in names))) if names else []
    for name in names:  # no seed shared by all: fall back to every run
        shared = [r for path, r in placements[name]["runs"].items() if not common or _seed_of(path) in common]
        placements[name]["common_seeds"] = {m: _mean_spread([r[m] for r in shared]) for m in outcome.measures}
    correlations = {}
    if len(names) >= 3:
        for measure in outcome.measures:  # final_train_loss: does the kernel predict how fast training goes?
            target = [placements[n]["common_seeds"][measure]["mean"] for n in names]
            correlations[measure] = {
                p: rank_correlation([placements[n]["predictors"][p] for n in names], target,
                                    resamples=config.resamples, seed=config.seed)
                for p in placements[names[0]]["predictors"]}
    ranking = sorted(names, key=lambda n: -outcome.direction * placements[n]["common_seeds"][outcome.test]["mean"])
    reference = "advised" if "advised" in placements else (names[0] if names else None)
    paired = {n: paired_difference(placements[reference]["runs"], placements[n]["runs"], outcome.test)
              for n in names if n != reference} if reference else {}
    document = {"settings": asdict(config), "primary": outcome.test, "budget": plan["budget"],
                "head_parameters": plan["head"],
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


def best_predictor(document: dict) -> tuple[str, float] | None:
    """The predictor whose Spearman ρ with the study's test measure points most strongly the
    useful way (Outcome.useful_sign), or None without correlations."""
    outcome = document_outcome(document)
    table = document.get("correlations", {}).get(outcome.test)
    if not table:
        return None
    finite = {p: c["spearman"] for p, c in table.items() if c["spearman"] == c["spearman"]}
    if not finite:
        return None
    name = max(finite, key=lambda p: outcome.useful_sign(p) * finite[p])
    return name, finite[name]
