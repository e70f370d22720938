"""RecommendConfig: every setting of a recommendation, with its default (the CLI reads them from here).

Importing this module loads no torch; validate() imports the name lists it checks against.
"""

from __future__ import annotations

import math

from dataclasses import dataclass, field

from ..errors import RecipeError
from ..settings import Allocation, Axis, ModuleGroup, Objective

# Default objective, chosen by `validate` on real minilm-l6 (README, "What the study found"):
# over 12 placements in each of three studies (RoCoFT on vader-movie and bbc-news, LoRA on
# vader-movie) tr K_S was the one objective whose value ranked placements positively in all
# three (Spearman 0.29, 0.84, 0.16; alignment: -0.44, -0.19, -0.55), and its advised arm was
# at least as accurate as the alignment one in each. It is also the cheapest search.
DEFAULT_OBJECTIVE = Objective.TRACE.value
# LoRA's rank step stays 2. One rank at a time led on validation at the shared rate (+1.67 vs
# +0.70 points over the best default, six suite tasks, one seed) but trailed at tuned rates,
# the comparison that decides (three tasks: one rank −0.62 over three seeds; two ranks −0.26 over
# the same three, −0.33 over six), as it does for
# --method auto (docs/suite.md, "One rank at a time").
DEFAULT_RANK_STEP = 2


@dataclass(frozen=True)
class RecommendConfig:
    method: str = "rocoft"
    budget: int = 21_506  # total trainable parameters: one row of every minilm-l6 block Linear + its head
    objective: str = DEFAULT_OBJECTIVE
    placement: str = "advised"
    axis: str = Axis.ROWS.value  # settings.Axis
    proximal: float = 0.0  # λ of (λ/2)‖θ − θ0‖²; also the ridge of the predicted kernel regression
    proximal_mode: str = "selective"
    allocation: str = Allocation.DEFAULT.value  # settings.Allocation says what each does
    candidates_per_module: int = 64
    module_rank: int = 8  # units per module for module-level baselines, LoRA's largest rank step count
    rank_step: int = DEFAULT_RANK_STEP  # LoRA: ranks each greedy step adds, worth Σ σ_i² of G over them
    modules: str = ModuleGroup.ALL.value  # settings.ModuleGroup: where the advised search may place
    train_head: bool = True
    train_bias: str = "none"
    seed: int = 0
    training: dict = field(default_factory=dict)
    capture_mib: float = 0  # MiB of x and δ the search holds at once; 0: capture()'s default. Not in the recipe

    def check(self) -> None:
        if self.seed < 0:
            raise RecipeError(f"--seed must be 0 or more, got {self.seed}")
        from ..methods import get_method, method_names

        Objective.check(self.objective, "--objective", RecipeError)
        Axis.check(self.axis, "--axis", RecipeError)
        ModuleGroup.check(self.modules, "--modules", RecipeError)
        if self.modules != ModuleGroup.ALL.value and self.placement != "advised":
            raise RecipeError(f"--modules {self.modules} restricts the advised search, and --placement "
                              f"{self.placement} is a baseline with its own modules: drop --modules or use "
                              "--placement advised")
        if not math.isfinite(self.capture_mib) or self.capture_mib < 0:
            raise RecipeError(f"--capture-mib must be 0 (from the free memory) or more, got {self.capture_mib}")
        if self.budget <= 0:
            raise RecipeError(f"--budget must be a positive number of parameters, got {self.budget}")
        if self.train_bias not in ("none", "all"):
            raise RecipeError(f"--train-bias must be none or all when recommending, got '{self.train_bias}'")
        if self.proximal < 0:
            raise RecipeError(f"--proximal must be >= 0, got {self.proximal}")
        if self.rank_step < 1:
            raise RecipeError(f"rank_step must be 1 or more (the LoRA ranks each greedy step adds), "
                              f"got {self.rank_step}")
        if self.method == "auto":
            if (self.allocation != Allocation.DEFAULT.value or self.placement != "advised"
                    or self.modules != ModuleGroup.ALL.value):
                raise RecipeError("--method auto chooses the method, so --allocation, --placement and --modules must "
                                  "stay at their defaults: name the method to set them")
            return  # the method-specific checks run once resolve_method has chosen
        if self.method not in method_names():
            raise RecipeError(f"unknown --method '{self.method}': use {', '.join(method_names())} or auto")
        Allocation.check(self.allocation, "--allocation", RecipeError)
        offered = ("default",) + get_method(self.method).allocations
        if self.allocation not in offered:
            raise RecipeError(f"--allocation {self.allocation} has no rule for {self.method}: use one of "
                              f"{', '.join(offered)}")
        names = ("advised",) + get_method(self.method).baselines
        if self.placement not in names:
            raise RecipeError(f"unknown --placement '{self.placement}' for {self.method}: use one of {', '.join(names)}")


def resolve_method(config: RecommendConfig) -> tuple[RecommendConfig, dict | None]:
    """``method="auto"`` made concrete (advice/method_choice.py); the choice block, or None."""
    from dataclasses import replace

    if config.method != "auto":
        return config, None
    from .method_choice import choose_method

    method, choice = choose_method(config.budget)
    return replace(config, method=method), choice


def resolve_allocation(config: RecommendConfig) -> RecommendConfig:
    """``allocation="default"`` made concrete: the method's own default rule."""
    from dataclasses import replace

    from ..methods import get_method

    if config.allocation != Allocation.DEFAULT.value:
        return config
    return replace(config, allocation=get_method(config.method).default_allocation)


def advised_rule(config: RecommendConfig) -> str:
    """The suite's name for the advised arm this configuration trains, so that a recipe quotes
    only the measurements of its own rule: ``advised-<allocation>``, and for LoRA at another
    rank step ``advised-step<n>``, within a module group ``…-<group>`` (benchmarks/suite names
    its arms so)."""
    group = "" if config.modules == ModuleGroup.ALL.value else f"-{config.modules}"
    if config.method == "lora" and config.rank_step != DEFAULT_RANK_STEP:
        return (f"advised-step{config.rank_step}" if config.allocation == "greedy"
                else f"advised-{config.allocation}-step{config.rank_step}") + group
    return f"advised-{config.allocation}{group}"
