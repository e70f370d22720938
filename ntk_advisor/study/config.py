"""ValidateConfig: every setting of a validation study, with its default (the CLI reads them from here).

Importing this module loads no torch; validate() imports the name lists it checks against.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ValidateError
from ..settings import Allocation, Objective


@dataclass(frozen=True)
class ValidateConfig:
    model: str = "minilm-l6"
    data: str = "vader-movie"
    task: str = "auto"  # the profile's --task; sft measures completion NLL instead of accuracy
    text_column: str = "text"
    label_column: str = "label"
    method: str = "rocoft"
    budget: int = 100_000
    placements: int = 12  # K
    seeds: int = 1  # training seeds for every placement
    key_seeds: int = 3  # training seeds for the key placements
    key_placements: tuple[str, ...] = ("advised", "first-k", "lora-qv", "weight-kappa")
    arms: tuple[str, ...] = ()  # exactly these placements (names as in the plan) instead of K
    steps: int | None = 150  # short runs, the same for every placement; None: train `epochs`
    epochs: int = 1
    learning_rate: float = 2e-3
    batch_size: int = 32
    samples: int = 64  # the profile's N
    head: str = "probe"  # the profile's head (training always starts from the recipe's head init)
    max_length: int = 64
    proximal: float = 0.0
    lambdas: tuple[float, ...] = ()
    kernel_examples: int = 512  # training examples the linear model is fitted on
    seed: int = 0
    resamples: int = 2000
    allocation: str = Allocation.DEFAULT.value  # the advised placements' allocation (settings.Allocation)

    def check(self) -> None:
        if self.seed < 0:
            raise ValidateError(f"--seed must be 0 or more, got {self.seed}")
        from ..methods import method_names
        from ..tasks import task_names

        if self.method not in method_names():
            raise ValidateError(f"unknown --method '{self.method}': use {' or '.join(method_names())}")
        if self.task != "auto" and self.task not in task_names():
            raise ValidateError(f"unknown --task '{self.task}': use auto, {', '.join(task_names())}")
        if not self.labelled and self.lambdas:
            raise ValidateError(f"--lambdas compares fine-tuning with a kernel-ridge classifier, which --task "
                                f"{self.task} has no labels for: drop --lambdas")
        if self.arms:
            known = {name for name, _, _ in arm_names(self.method, self.labelled)}
            needs_labels = {name for name, _, _ in arm_names(self.method)} - known
            if needs_labels & set(self.arms):
                raise ValidateError(f"arm '{sorted(needs_labels & set(self.arms))[0]}' ranks by labels, which "
                                    f"--task {self.task} has none of: use advised or another objective")
            unknown = [a for a in self.arms if a not in known and not random_arm_seed(a)]
            if unknown:
                raise ValidateError(f"unknown arm '{unknown[0]}': use advised, advised-<objective>, a baseline "
                                    f"({', '.join(sorted(known - {'advised'}))}) or random-<seed>")
            if len(set(self.arms)) != len(self.arms):
                raise ValidateError("--arms names a placement twice")
        elif self.placements != 0 and self.placements < 3:
            raise ValidateError(f"--placements must be at least 3 to rank-correlate, got {self.placements} "
                                "(0 runs only the --lambdas sweep)")
        if self.placements == 0 and not self.lambdas:
            raise ValidateError("--placements 0 leaves nothing to do: give --lambdas or at least 3 placements")
        if self.seeds < 1 or self.key_seeds < 1:
            raise ValidateError("--seeds and --key-seeds must be at least 1")
        if any(lam < 0 for lam in self.lambdas):
            raise ValidateError(f"--lambdas must all be >= 0, got {list(self.lambdas)}")
        Allocation.check(self.allocation, "--allocation", ValidateError)
        if self.steps is not None and self.steps < 1:
            raise ValidateError(f"--steps must be at least 1, got {self.steps}")

    @property
    def labelled(self) -> bool:
        """Whether the task's examples carry labels; without them (supervised fine-tuning) the
        study measures completion NLL and offers no alignment, LOO accuracy or λ sweep."""
        if self.task == "auto":
            return True  # a classifier or label words, by model
        from ..tasks import get_task

        return get_task(self.task).labelled

    def training(self, seed: int) -> dict:
        steps = {"max_steps": self.steps} if self.steps else {"epochs": self.epochs}
        return steps | {"learning_rate": self.learning_rate, "batch_size": self.batch_size, "seed": seed,
                        "early_stopping_patience": 0, "checkpoint_every": 50}


def arm_names(method: str, labelled: bool = True) -> list[tuple[str, str, str]]:
    """(placement name, placement kind, method) in the order they fill K; without labels (SFT)
    the objectives that need them are left out."""
    from ..advice.config import DEFAULT_OBJECTIVE
    from ..methods import get_method
    from ..ntk.select import LABELLED_OBJECTIVES

    objectives = [o for o in Objective.values() if o != DEFAULT_OBJECTIVE
                  and (labelled or o not in LABELLED_OBJECTIVES)]
    advised = [("advised" if o == DEFAULT_OBJECTIVE else f"advised-{o}", o, method)
               for o in [DEFAULT_OBJECTIVE] + objectives]
    baselines = [(b, b, method) for b in get_method(method).baselines]
    cross = [(name, name, other) for name, other in get_method(method).cross_arms]
    return advised + baselines + cross


def random_arm_seed(name: str) -> int | None:
    """random-<n>: the random placement drawn with seed + n."""
    head, _, tail = name.partition("-")
    return int(tail) if head == "random" and tail.isdigit() and int(tail) > 0 else None
