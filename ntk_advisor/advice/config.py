"""RecommendConfig: every setting of a recommendation, with its default (the CLI reads them from here).

Importing this module loads no torch; validate() imports the name lists it checks against.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import RecipeError

# Default objective, chosen by `validate` on real minilm-l6 (README, "What the study found"):
# over 12 placements in each of three studies (RoCoFT on vader-movie and bbc-news, LoRA on
# vader-movie) tr K_S was the one objective whose value ranked placements positively in all
# three (Spearman 0.29, 0.84, 0.16; alignment: -0.44, -0.19, -0.55), and its advised arm was
# at least as accurate as the alignment one in each. It is also the cheapest search.
DEFAULT_OBJECTIVE = "trace"
ALLOCATIONS = ("greedy", "uniform", "free")
@dataclass(frozen=True)
class RecommendConfig:
    method: str = "rocoft"
    budget: int = 21_506  # total trainable parameters: one row of every minilm-l6 block Linear + its head
    objective: str = DEFAULT_OBJECTIVE
    placement: str = "advised"
    axis: str = "rows"  # RoCoFT: rows (output units) or cols (input features)
    proximal: float = 0.0  # λ of (λ/2)‖θ − θ0‖²; also the ridge of the predicted kernel regression
    proximal_mode: str = "selective"
    # RoCoFT: how rows are spread over modules before the objective spends what is left.
    # greedy: one best-aligned row in every module, then the objective; uniform: rounds of one
    # row per module (each module's next best-aligned) until the budget is spent; free: the
    # objective alone. LoRA: greedy gives ranks by the label gradient's spectrum (when the
    # profile has it); free (or uniform) the kernel objective alone.
    allocation: str = "greedy"
    candidates_per_module: int = 64
    module_rank: int = 8  # units per module for module-level baselines, LoRA's largest rank step count
    train_head: bool = True
    train_bias: str = "none"
    seed: int = 0
    training: dict = field(default_factory=dict)

    def validate(self) -> None:
        from ..methods import get_method, method_names
        from ..ntk.select import OBJECTIVES

        if self.method not in method_names():
            raise RecipeError(f"unknown --method '{self.method}': use {' or '.join(method_names())}")
        if self.objective not in OBJECTIVES:
            raise RecipeError(f"unknown --objective '{self.objective}': use one of {', '.join(OBJECTIVES)}")
        if self.axis not in ("rows", "cols"):
            raise RecipeError(f"unknown --axis '{self.axis}': use rows or cols")
        if self.budget <= 0:
            raise RecipeError(f"--budget must be a positive number of parameters, got {self.budget}")
        if self.train_bias not in ("none", "all"):
            raise RecipeError(f"--train-bias must be none or all when recommending, got '{self.train_bias}'")
        if self.allocation not in ALLOCATIONS:
            raise RecipeError(f"unknown --allocation '{self.allocation}': use one of {', '.join(ALLOCATIONS)}")
        if self.proximal < 0:
            raise RecipeError(f"--proximal must be >= 0, got {self.proximal}")
        names = ("advised",) + get_method(self.method).baselines
        if self.placement not in names:
            raise RecipeError(f"unknown --placement '{self.placement}' for {self.method}: use one of {', '.join(names)}")
