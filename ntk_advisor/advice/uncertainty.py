"""How sure a recipe is: the predicted gain over the default placement, with an interval.

Two figures, because neither alone is enough:

- **On this task (the profile), a diagnostic:** leave-one-out kernel-ridge accuracy of K_S against the
  reference placement's kernel on the N probe examples, both with the search's ridge. The
  per-example difference d_n = 1[advised right] − 1[reference right] is resampled (paired
  bootstrap, B = 2,000 draws of N examples, seeded) for a 90 % interval. Cost: two R×R
  inverses, then B means over N. With N = 64 the interval is wide, and it says so.
- **On tasks it was never tuned on (the suite), the prediction:** the measured test-split
  gains of the same rule over the best default placement of its method in
  ``benchmarks/suite`` (copied into ``suite_evidence.json`` by ``benchmarks/suite/run.py``),
  at the nearest budget: the mean, the worst and the best task. The suite also records how
  often the profile's estimate had the measured gain's sign (``profile_check``); the
  sentence says so, because on the first suite tasks it did not.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from ..ntk.spectral import loo_kernel_ridge

SUITE_EVIDENCE = Path(__file__).with_name("suite_evidence.json")
SFT_EVIDENCE = Path(__file__).with_name("sft_evidence.json")
RESAMPLES = 2_000


def loo_correct(captured, kernel: torch.Tensor, ridge: float) -> torch.Tensor | None:
    """(N,) 1.0 where the LOO kernel-ridge prediction of example n is its label; None without labels."""
    spec = captured.spec
    if float(torch.diagonal(kernel).sum()) <= 0:
        return None
    predictions = loo_kernel_ridge(kernel.to(torch.float64), spec.regression_targets(), ridge)
    return (spec.predicted_classes(predictions) == spec.labels).to(torch.float64)


def paired_gain_interval(advised: torch.Tensor, reference: torch.Tensor, seed: int = 0,
                         resamples: int = RESAMPLES) -> dict:
    """Mean of advised − reference in points, and the 5 % / 95 % quantiles of its bootstrap."""
    diff = 100.0 * (advised - reference)
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randint(0, diff.shape[0], (resamples, diff.shape[0]), generator=generator)
    means = diff[draws].mean(dim=1)
    low, high = torch.quantile(means, torch.tensor([0.05, 0.95], dtype=means.dtype)).tolist()
    return {"estimate": round(float(diff.mean()), 2), "low": round(low, 2), "high": round(high, 2),
            "examples": int(diff.shape[0])}


def suite_gain(method: str, rule: str, budget: int, path: Path | None = None) -> dict | None:
    """The suite's measured gains of ``rule`` (an advised arm) at the budget nearest ``budget``,
    if that is within a factor of two; else None."""
    path = path or SUITE_EVIDENCE
    if not path.exists():
        return None
    studies = [s for s in json.loads(path.read_text())["studies"] if s["method"] == method and rule in s["rules"]]
    if not studies:
        return None
    study = min(studies, key=lambda s: abs(math.log(s["budget"] / budget)))
    if abs(math.log(study["budget"] / budget)) > math.log(2):
        return None  # a budget more than twice or half as large measures another regime
    gains = study["rules"][rule]
    values = list(gains.values())
    found = {"study": study["name"], "model": study["model"], "budget": study["budget"], "rule": rule,
             "split": "test", "tasks": len(values), "mean": round(sum(values) / len(values), 2),
             "worst": round(min(values), 2), "best": round(max(values), 2), "per_task": gains,
             "learning_rate": study.get("learning_rate"), "profile_check": study.get("profile_check")}
    tuned = study.get("tuned_learning_rates", {}).get(rule)
    if tuned:  # each arm at its own best learning rate: the check that the gain is not a learning-rate effect
        tuned_values = [entry["gain"] for entry in tuned.values()]
        found["at_tuned_learning_rates"] = {"tasks": len(tuned_values),
                                            "mean": round(sum(tuned_values) / len(tuned_values), 2),
                                            "worst": round(min(tuned_values), 2), "per_task": tuned}
    return found


def uncertainty(captured, kernel: torch.Tensor, reference: str, reference_kernel: torch.Tensor | None, ridge: float,
                method: str, rule: str, budget: int, safe: bool, seed: int = 0) -> dict:
    """The recipe's ``evidence.uncertainty`` block, with its plain sentence."""
    block: dict = {"reference": reference, "rule": rule, "safe_allocation": safe}
    advised = loo_correct(captured, kernel, ridge)
    base = loo_correct(captured, reference_kernel, ridge) if reference_kernel is not None else None
    if advised is not None and base is not None:
        block["profile_gain_points"] = paired_gain_interval(advised, base, seed) | {
            "basis": "LOO kernel-ridge accuracy on the probe sample, paired bootstrap, 90 % interval"}
    suite = suite_gain(method, rule, budget)
    if suite is not None:
        block["suite_gain_points"] = suite
    block["sentence"] = _sentence(block, reference)
    return block


def sft_uncertainty(reference: str, method: str, rule: str, safe: bool, budget: int | None = None,
                    lora_init: str = "default", use_rslora: bool = False, path: Path | None = None) -> dict:
    """The block of a supervised fine-tuning recipe. The classification suite says nothing
    about SFT, and an SFT profile has no labels for a LOO estimate, so what is quoted is the
    SFT study's measured test-NLL reduction (``benchmarks/sft``, copied into
    ``sft_evidence.json``), and only for what the study measured: its method, rule and
    initialization and LoRA scale, at a budget within a factor of two of its own."""
    block: dict = {"reference": reference, "rule": rule, "safe_allocation": safe}
    path = path or SFT_EVIDENCE
    study = json.loads(path.read_text()) if path.exists() else {}
    if study.get("tasks") and _sft_study_measured(study, method, rule, budget, lora_init, use_rslora):
        block["sft_study_nll_reduction"] = study
        block["sentence"] = _sft_sentence(study, reference)
        return block
    block["sentence"] = ("No measurement covers this rule for supervised fine-tuning yet: the suite's gains are for "
                         "classification and an SFT profile has no labels for a leave-one-out estimate, so the gain "
                         f"over the default placement is unknown; train {reference} beside this recipe and compare "
                         "validation NLL.")
    return block


def _sft_study_measured(study: dict, method: str, rule: str, budget: int | None, lora_init: str,
                        use_rslora: bool) -> bool:
    if (study.get("method"), study.get("rule"), study.get("lora_init"), study.get("use_rslora", False)) != (
            method, rule, lora_init, use_rslora):
        return False
    return budget is None or not study.get("budget") or abs(math.log(study["budget"] / budget)) <= math.log(2)


def _sft_sentence(study: dict, reference: str) -> str:
    def seeds(r):
        return f"{r['seeds']} seed{'s' if r['seeds'] != 1 else ''}"

    def against_defaults(tasks: dict) -> str:
        return "; ".join(f"{task} {r['percent_lower']:+.2f} %" + (f" ± {r['se']:.2f}" if r["se"] is not None else "")
                         + f" vs {r['best_default']} ({seeds(r)})" for task, r in tasks.items())

    defaults = against_defaults(study["tasks"])
    rivals = "; ".join(f"{task} " + ", ".join(f"{v:+.2f} % vs {rival}" for rival, v in r["percent_lower_than_rivals"]
                                              .items())
                       for task, r in study["tasks"].items() if r.get("percent_lower_than_rivals"))
    text = (f"Measured on the SFT study ({study['model']}, {study['steps']} steps, each arm at its learning rate "
            f"chosen on validation, test split), this rule's completion NLL was lower than the best default "
            f"placement's by: {defaults}")
    if rivals:
        text += f"; and lower than PEFT's data-driven initializations' by: {rivals}"
    for steps, tasks in study.get("longer_runs", {}).items():  # a probe of longer training, where one ran
        text += f"; in longer runs of {steps} steps by: {against_defaults(tasks)}"
    return text + f". A negative figure means higher. Train {reference} beside this recipe and compare validation NLL."


def _sentence(block: dict, reference: str) -> str:
    """The suite's measured range leads: it is what the rule did on tasks nobody tuned it on.
    The profile's LOO estimate follows only with what the suite found about it."""
    parts = []
    suite = block.get("suite_gain_points")
    if suite:
        parts.append(f"Expected gain over the best default placement: {suite['mean']:+.1f} points, as measured on "
                     f"{suite['tasks']} suite tasks ({suite['model']}, {suite['study']}, test split; worst task "
                     f"{suite['worst']:+.1f}, best {suite['best']:+.1f}).")
        tuned = suite.get("at_tuned_learning_rates")
        if tuned:
            parts.append(f"That is at one shared learning rate; with each placement at its own best learning rate "
                         f"({tuned['tasks']} task{'s' if tuned['tasks'] != 1 else ''}) the gain was "
                         f"{tuned['mean']:+.1f} points on average (worst task {tuned['worst']:+.1f}), so tune the "
                         f"learning rate before crediting the placement.")
    else:
        parts.append("No suite measurement covers this method and rule yet: the gain over the default is unknown.")
    if block["safe_allocation"]:
        parts.append("The budget is spread over modules as the default placement spreads it (the safe "
                     "allocation); only the choice inside each module follows the profile.")
    profile = block.get("profile_gain_points")
    if profile:
        check = (suite or {}).get("profile_check")
        verdict = (f" On the suite this estimate had the measured gain's sign on {check['sign_agrees']} of "
                   f"{check['rows']} runs, so it is not used as the prediction." if check else
                   " It is not yet checked against measured runs.")
        parts.append(f"The profile's own estimate (LOO kernel regression on {profile['examples']} probe examples) "
                     f"is {profile['estimate']:+.1f} points over {reference} (90 % interval {profile['low']:+.1f} to "
                     f"{profile['high']:+.1f})." + verdict)
    return " ".join(parts)
