"""What a fine-tuning method is to ntk-advisor, and the typed parts of a placement.

A placement maps a module name to the *part* of it a method trains:

=========  ==========================================  ===================================
part       what trains                                 recipe target keys
=========  ==========================================  ===================================
Slices     rows (output units) or columns (inputs)     ``axis`` + ``indices``
Rank       a rank-r update B A                         ``rank``
Whole      the whole of what the method trains there   ``module`` alone
=========  ==========================================  ===================================

A method (``Method``) declares everything that differs between methods: its part type and
unit cost, the candidates the search chooses among, the named baselines, each part's share
of the kernel K_S, how it is put on a model, saved, loaded and merged, and its PEFT and
axolotl keys. The rest of ntk-advisor asks the registry (``methods.get_method``), never
compares a method's name. Adding a method is one folder plus one ``register`` line.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Union

from .._registry import Registry
from ..errors import RecipeError

if TYPE_CHECKING:  # type names only: importing them would tie the methods to the advice
    import torch
    from torch import nn

    from ..advice.config import RecommendConfig
    from ..inputs.models import TargetModule
    from ..profiling.capture import Captured
    from ..recipe.schema import Recipe, Target


@dataclass(frozen=True)
class Slices:
    """Rows (``axis="rows"``, output units W[i, :]) or columns (``"cols"``, W[:, j]) of W."""

    axis: str
    indices: tuple[int, ...]

    @property
    def units(self) -> int:
        return len(self.indices)


@dataclass(frozen=True)
class Rank:
    """A rank-r low-rank update."""

    rank: int

    @property
    def units(self) -> int:
        return self.rank


@dataclass(frozen=True)
class Whole:
    """Everything the method trains in the module (for example its bias)."""

    @property
    def units(self) -> int:
        return 1


Part = Union[Slices, Rank, Whole]
Placement = dict[str, Part]  # module name -> part, in model order


def part_from_target(target: Target) -> Part:
    if target.rank is not None:
        return Rank(target.rank)
    if target.axis is not None:
        return Slices(target.axis, tuple(target.indices))
    return Whole()


def target_fields(part: Part) -> dict:
    """The recipe target keys of a part (Target(module=..., **target_fields(part)))."""
    if isinstance(part, Rank):
        return {"rank": part.rank}
    if isinstance(part, Slices):
        return {"axis": part.axis, "indices": tuple(part.indices)}
    return {}


def part_to_json(part: Part) -> dict:
    fields = target_fields(part)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}


def part_from_json(value) -> Part:
    """Parts as plan.json stores them; also reads 0.1 studies ([axis, indices] or a bare rank)."""
    if isinstance(value, int):
        return Rank(value)
    if isinstance(value, list):
        return Slices(value[0], tuple(value[1]))
    if "rank" in value:
        return Rank(int(value["rank"]))
    if "axis" in value:
        return Slices(value["axis"], tuple(value["indices"]))
    return Whole()


@dataclass
class Candidates:
    """What the budgeted greedy search chooses among: item i is (module, unit), its kernel,
    its cost in weights, and optionally the order in which items are forced in first."""

    items: list[tuple[str, object]]
    kernels: list[torch.Tensor]
    costs: list[int]
    start: list[int] | None = None


class Method(ABC):
    """One fine-tuning method. Subclasses set the class attributes and implement the hooks."""

    name: ClassVar[str]
    part_type: ClassVar[type]
    baselines: ClassVar[tuple[str, ...]]  # named placements at the same budget (docs/method.md §10)
    reference: ClassVar[str | None] = None  # the default placement every recipe's evidence is compared with
    cross_arms: ClassVar[tuple[tuple[str, str], ...]] = ()  # (placement, method) arms `validate` adds
    default_allocation: ClassVar[str] = "greedy"  # what --allocation default means for this method
    allocations: ClassVar[tuple[str, ...]] = ("greedy", "free")  # the --allocation values it has rules for
    safe_allocations: ClassVar[tuple[str, ...]] = ()  # allocations that spread the budget as the reference does
    kernel_is_a_part: ClassVar[bool] = True  # K of a placed part is a PSD part of K_m (Weyl distance bound)
    unit_label: ClassVar[str] = "units"

    # ------------------------------------------------------------------ cost and checks
    @abstractmethod
    def part_cost(self, module: TargetModule, part: Part) -> int:
        """Trainable weights of ``part`` of ``module``."""

    def check_part(self, module: TargetModule, part: Part) -> str | None:
        """None, or what is wrong with ``part`` for ``module`` (an index out of range, a rank too large)."""
        return None

    def check_target_shape(self, target: Target) -> None:
        """Raise ValueError unless the recipe target has this method's keys."""
        if not isinstance(part_from_target(target), self.part_type):
            keys = {Slices: "axis and indices", Rank: "a rank", Whole: "the module name alone"}[self.part_type]
            raise ValueError(f"method {self.name} needs {keys} for '{target.module}'")

    # ------------------------------------------------------------------ advice
    @abstractmethod
    def kernel_part(self, captured: Captured, name: str, part: Part) -> torch.Tensor:
        """The part's share of the restricted kernel K_S, (R, R) float64."""

    def kernel_scale(self, part: Part, training) -> float:
        """The factor a recipe's ``training`` section puts on the part's kernel_part (1: none)."""
        return 1.0

    @abstractmethod
    def candidates(self, captured: Captured, config: RecommendConfig) -> Candidates:
        """The items the greedy search chooses among."""

    @abstractmethod
    def collect(self, chosen: list[tuple[str, object]], config: RecommendConfig) -> Placement:
        """The placement made of the chosen (module, unit) items."""

    def allocate(self, captured: Captured, config: RecommendConfig, budget: int) -> tuple | None:
        """A rule that replaces the search: (placement, scores, stats), or None to search."""
        return None

    @abstractmethod
    def baseline(self, name: str, captured: Captured, config: RecommendConfig, budget: int) -> Placement:
        """The named baseline placement at ``budget`` weights."""

    def signal_captured(self, captured: Captured, placement: Placement) -> float:
        """Share of the label-gradient energy the placement can move (NaN when not defined)."""
        return math.nan

    # ------------------------------------------------------------------ models
    @abstractmethod
    def apply(self, model: nn.Module, recipe: Recipe, extra_trainable: list[str], head_name: str | None) -> nn.Module:
        """Freeze ``model``, put the placement on it, unfreeze ``extra_trainable``; the model to train."""

    def check_training(self, training) -> str | None:
        """None, or what in the recipe's training section this method cannot do."""
        if training.lora_init != "default":
            return f"lora_init={training.lora_init} is a LoRA setting; this recipe's method is {self.name}: remove it"
        if training.use_rslora:
            return f"use_rslora is a LoRA setting; this recipe's method is {self.name}: remove it"
        return None

    def initialize(self, model: nn.Module, recipe: Recipe, calibration) -> None:
        """A data-driven init after ``apply`` (``calibration()`` yields input batches); none by default."""

    @abstractmethod
    def save(self, model: nn.Module, folder, recipe: Recipe) -> None:
        """Write the trained adapter to ``folder`` (adapter_config.json + safetensors)."""

    @abstractmethod
    def owns_adapter(self, config: dict) -> bool:
        """Whether an adapter_config.json document was written by this method."""

    @abstractmethod
    def load(self, model: nn.Module, folder) -> nn.Module:
        """A fresh base model with the saved adapter on it."""

    @abstractmethod
    def merge(self, model: nn.Module) -> nn.Module:
        """A plain model with the adapter folded into its weights."""

    # ------------------------------------------------------------------ other tools' keys
    def peft_section(self, placement: Placement, training) -> dict | None:
        """``peft.LoraConfig(**section)`` keys for the placement and the recipe's ``training``
        (dropout, LoRA's α and scale), or None when LoRA cannot say it."""
        return None

    def axolotl_section(self, placement: Placement, training) -> dict | None:
        return None

    def conversion_note(self, tool: str, placement: Placement, training=None) -> str | None:
        """What the ``tool`` ("peft", "axolotl") keys cannot say about the placement trained
        with ``training``, if anything."""
        return None


_REGISTRY: Registry[Method] = Registry("method", RecipeError)
register = _REGISTRY.register
method_names = _REGISTRY.names
get_method = _REGISTRY.get


def method_for_adapter(config: dict) -> Method | None:
    return next((m for m in _REGISTRY.values() if m.owns_adapter(config)), None)
