"""``--method auto``: RoCoFT or LoRA, chosen from what the suite measured, and why.

The profile cannot choose between methods: its kernel-ridge estimate had the measured gain's
sign on too few suite runs to rank placements of one method (docs/suite.md), let alone two.
So the choice is the suite's: at the suite budget nearest the one asked for (within a factor
of two), each task's accuracy of RoCoFT's default advice is set against LoRA's default
advice at the same parameter count, and the method that won on more tasks is chosen (a tie
goes to the larger mean difference). The comparison with each method at its own tuned
learning rate is used when it covers at least ``TUNED_TASKS`` tasks (a win at one shared
rate may be a learning-rate effect), else the one at the shared rate. Wins are counted on
the validation split, as every other default is chosen; the test split is reported. Without
a comparison that close, the default method (rocoft) is chosen and the reason says that
nothing was measured there.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

FALLBACK = "rocoft"
TUNED_TASKS = 3


def choose_method(budget: int, path: Path | None = None) -> tuple[str, dict]:
    """(method, the recipe's ``evidence.method_choice`` block with its sentence)."""
    from .uncertainty import SUITE_EVIDENCE

    path = path or SUITE_EVIDENCE
    comparisons = json.loads(path.read_text()).get("method_comparisons", []) if path.exists() else []
    near = [c for c in comparisons if abs(math.log(c["budget"] / budget)) <= math.log(2) and c["per_task"]]
    if near:
        nearest = min(abs(math.log(c["budget"] / budget)) for c in near)
        at_budget = [c for c in near if abs(math.log(c["budget"] / budget)) == nearest]
        tuned = [c for c in at_budget if c["learning_rate"] == "tuned" and len(c["per_task"]) >= TUNED_TASKS]
        usable = tuned or [c for c in at_budget if c["learning_rate"] != "tuned"]
        if usable:
            return _choice(usable[0])
        why = (f"the suite's only RoCoFT-vs-LoRA comparison near {budget:,} parameters is at tuned learning rates on "
               f"fewer than {TUNED_TASKS} tasks")
    else:
        why = f"the suite has no measured RoCoFT-vs-LoRA comparison within a factor of two of {budget:,} parameters"
    return FALLBACK, {"asked": "auto", "chosen": FALLBACK, "basis": "fallback",
                      "sentence": f"--method auto chose {FALLBACK}, the default method: {why}."}


def _differences(per_task: dict, split: str) -> dict[str, float]:
    """LoRA − RoCoFT in points per task; a task's test means sit at its top level."""
    scores = {task: v["validation"] if split == "validation" else v for task, v in per_task.items()}
    return {task: 100.0 * (s["lora"] - s["rocoft"]) for task, s in scores.items()}


def _choice(comparison: dict) -> tuple[str, dict]:
    validation = _differences(comparison["per_task"], "validation")
    test = _differences(comparison["per_task"], "test")
    lora_wins = sum(d > 0 for d in validation.values())
    rocoft_wins = sum(d < 0 for d in validation.values())
    mean = sum(validation.values()) / len(validation)
    chosen = "lora" if (lora_wins, mean) > (rocoft_wins, 0.0) else "rocoft"
    sign = 1 if chosen == "lora" else -1
    wins, losses = (lora_wins, rocoft_wins) if chosen == "lora" else (rocoft_wins, lora_wins)
    test_wins, test_losses = (sum(sign * d > 0 for d in test.values()), sum(sign * d < 0 for d in test.values()))
    other = "RoCoFT" if chosen == "lora" else "LoRA"
    worst_task = min(test, key=lambda t: sign * test[t])
    rates = ("each method at its own tuned learning rate" if comparison["learning_rate"] == "tuned"
             else f"learning rate {comparison['learning_rate']:g} for both")
    decided = f" (the wins tie, so the validation mean decided: {sign * mean:+.1f} points)" if wins == losses else ""
    sentence = (f"--method auto chose {chosen}: at {comparison['budget']:,} parameters, {rates}, its default advice "
                f"won {wins}, lost {losses} and tied {len(validation) - wins - losses} of {len(validation)} suite "
                f"tasks against {other}'s on the validation split{decided} ({comparison['model']}, "
                f"{comparison['steps']} steps); on test it won {test_wins} and lost {test_losses}, mean difference "
                f"{sign * sum(test.values()) / len(test):+.1f} points, worst task {worst_task} "
                f"({sign * test[worst_task]:+.1f}).")
    return chosen, {"asked": "auto", "chosen": chosen, "basis": "suite", "budget": comparison["budget"],
                    "model": comparison["model"], "learning_rate": comparison["learning_rate"],
                    "validation_points_lora_minus_rocoft": {t: round(d, 2) for t, d in validation.items()},
                    "points_lora_minus_rocoft": {t: round(d, 2) for t, d in test.items()},
                    "sentence": sentence}
