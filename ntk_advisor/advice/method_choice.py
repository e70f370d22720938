"""``--method auto``: RoCoFT or LoRA, chosen from what the suite measured, and why.

The profile cannot choose between methods: its kernel-ridge estimate had the measured gain's
sign on too few suite runs to rank placements of one method (docs/suite.md), let alone two.
So the choice is the suite's: at the suite budget nearest the one asked for (within a factor
of two), each task's test accuracy of RoCoFT's default advice is set against LoRA's default
advice at the same parameter count, and the method that won on more tasks is chosen (a tie
goes to the larger mean difference). Without a comparison that close, the default method
(rocoft) is chosen and the reason says that nothing was measured there.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

FALLBACK = "rocoft"


def choose_method(budget: int, path: Path | None = None) -> tuple[str, dict]:
    """(method, the recipe's ``evidence.method_choice`` block with its sentence)."""
    from .uncertainty import SUITE_EVIDENCE

    path = path or SUITE_EVIDENCE
    comparisons = json.loads(path.read_text()).get("method_comparisons", []) if path.exists() else []
    near = [c for c in comparisons if abs(math.log(c["budget"] / budget)) <= math.log(2) and c["per_task"]]
    if not near:
        return FALLBACK, {"asked": "auto", "chosen": FALLBACK, "basis": "fallback",
                          "sentence": f"--method auto chose {FALLBACK}, the default method: the suite has no "
                                      f"measured RoCoFT-vs-LoRA comparison within a factor of two of {budget:,} "
                                      "parameters."}
    comparison = min(near, key=lambda c: abs(math.log(c["budget"] / budget)))
    per_task = comparison["per_task"]
    differences = {task: 100.0 * (scores["lora"] - scores["rocoft"]) for task, scores in per_task.items()}
    lora_wins = sum(d > 0 for d in differences.values())
    rocoft_wins = sum(d < 0 for d in differences.values())
    mean = sum(differences.values()) / len(differences)
    chosen = "lora" if (lora_wins, mean) > (rocoft_wins, 0.0) else "rocoft"
    wins, losses = (lora_wins, rocoft_wins) if chosen == "lora" else (rocoft_wins, lora_wins)
    ties = len(differences) - wins - losses
    other = "RoCoFT" if chosen == "lora" else "LoRA"
    sign = 1 if chosen == "lora" else -1
    worst_task = min(differences, key=lambda t: sign * differences[t])
    decided = " (the wins tie, so the mean decided)" if wins == losses else ""
    sentence = (f"--method auto chose {chosen}: at {comparison['budget']:,} parameters its default advice won "
                f"{wins}, lost {losses} and tied {ties} of {len(differences)} suite tasks against {other}'s "
                f"({comparison['model']}, {comparison['steps']} steps, test split){decided}; mean difference "
                f"{sign * mean:+.1f} points, worst task {worst_task} ({sign * differences[worst_task]:+.1f}).")
    return chosen, {"asked": "auto", "chosen": chosen, "basis": "suite", "budget": comparison["budget"],
                    "model": comparison["model"], "points_lora_minus_rocoft": {t: round(d, 2) for t, d in
                                                                               differences.items()},
                    "sentence": sentence}
