"""LoRA (through PEFT) as a registered method: which modules, and what rank each."""

from __future__ import annotations

import math

import torch

from ...advice.baselines import baseline_counts, unit_cost
from ...advice.signal_rules import lora_by_spectrum
from ...recipe.conversions import axolotl_lora, default_rank, peft_section
from ...recipe.schema import Target
from ...errors import RecipeError
from ..base import Candidates, Method, Rank
from . import apply_lora, initialize_eva, save_lora


class LoRA(Method):
    """ΔW = (α/r) B A with B = 0 at θ0 (Hu et al., 2021), through PEFT; α = r per module."""

    name = "lora"
    part_type = Rank
    baselines = ("lora-qv", "lora-all", "lora-mlp", "random", "weight-kappa", "grad-norm")
    reference = "lora-qv"
    allocations = ("greedy", "signal", "free")  # greedy: ranks by the label gradient's spectrum
    kernel_is_a_part = False  # E[K_LoRA(r)] is a scaled K_m, not a part of it: no partition bound
    unit_label = "LoRA rank"

    def part_cost(self, module, part: Rank) -> int:
        return part.rank * unit_cost(module, "rank")

    def check_part(self, module, part: Rank) -> str | None:
        limit = min(module.d_in, module.d_out)
        return f"rank {part.rank} exceeds min(d_in, d_out) = {limit} of '{module.name}'" if part.rank > limit else None

    # ------------------------------------------------------------------ advice
    def kernel_part(self, captured, name: str, part: Rank) -> torch.Tensor:
        """E_A[K_LoRA(r)] = r·σ²·K_W with PEFT's kaiming-uniform A, σ² = 1/(3·d_in) (docs/method.md §5)."""
        return part.rank * captured.profile.kernels[name] / (3.0 * captured.targets[name].d_in)

    def kernel_scale(self, part: Rank, training) -> float:
        """s² for PEFT's scale s of a rank-r module, against kernel_part's s = 1 (α = r).

        s = α/r, or α/√r under rsLoRA, with α = r per module when none is given (1 under
        rsLoRA). The kernel of ∂f/∂B is quadratic in s, so under rsLoRA at α = 1 a module's
        expected kernel is σ²·K_W whatever its rank."""
        if training.use_rslora:
            alpha = training.lora_alpha or 1.0
            return alpha * alpha / part.rank
        alpha = training.lora_alpha or part.rank
        return (alpha / part.rank) ** 2

    def candidates(self, captured, config) -> Candidates:
        found = Candidates([], [], [])
        for name, t in captured.targets.items():
            base = captured.profile.kernels[name] / (3.0 * t.d_in)
            for _ in range(config.module_rank * 4 // config.rank_step):
                found.items.append((name, config.rank_step))
                found.kernels.append(config.rank_step * base)
                found.costs.append(config.rank_step * unit_cost(t, "rank"))
        return found

    def collect(self, chosen, config) -> dict[str, Rank]:
        ranks: dict[str, int] = {}
        for name, step in chosen:
            ranks[name] = ranks.get(name, 0) + step
        return {name: Rank(r) for name, r in ranks.items()}

    def allocate(self, captured, config, budget: int):
        """Ranks by the label gradient's spectrum, when the profile has it (allocation greedy;
        signal gives every module rank 1 first)."""
        if config.allocation not in ("greedy", "signal") or not captured.profile.scores.get("signal_spectrum"):
            return None
        ranks, scores, stats = lora_by_spectrum(captured, config, budget, config.rank_step,
                                                coverage=config.allocation == "signal")
        stats["objective_value"] = self.signal_captured(captured, {n: Rank(r) for n, r in ranks.items()})
        return {n: Rank(r) for n, r in ranks.items()}, scores, stats

    def baseline(self, name: str, captured, config, budget: int) -> dict[str, Rank]:
        counts = baseline_counts(name, "rank", list(captured.targets.values()), budget, weights=captured.weights,
                                 grad_norms=captured.grad_norms if name == "grad-norm" else None,
                                 module_rank=config.module_rank, seed=config.seed)
        return {n: Rank(k) for n, k in counts.items()}

    def signal_captured(self, captured, placement: dict[str, Rank]) -> float:
        """The top-r squared singular values of each module's G: the most any rank-r update holds."""
        rows = captured.profile.scores.get("rows_signal", {})
        spectra = captured.profile.scores.get("signal_spectrum", {})
        if not spectra or not all(name in rows for name in captured.targets):
            return math.nan
        total = sum(float(rows[name].sum()) for name in captured.targets)  # each module's ‖G‖²_F
        held = sum(float(spectra[name][:part.rank].sum()) for name, part in placement.items())
        return held / total if total > 0 else math.nan

    # ------------------------------------------------------------------ models
    def apply(self, model, recipe, extra_trainable, head_name, gradient_step=None):
        head = head_name if recipe.training.train_head else None
        eva = recipe.training.eva_rho if recipe.training.lora_init == "eva" else None
        if recipe.training.lora_init == "loraga" and gradient_step is None:
            raise RecipeError("training.lora_init=loraga needs the task's gradient on training batches: pass "
                              "gradient_step= to apply_recipe (train does)")
        return apply_lora(model, recipe.targets, recipe.training.lora_alpha, recipe.training.lora_dropout, head,
                          recipe.training.train_bias, eva, gradient_step if recipe.training.lora_init == "loraga" else None,
                          recipe.training.use_rslora)

    def check_training(self, training) -> str | None:
        if training.lora_init == "loraga" and training.use_rslora:
            # PEFT cannot convert a LoRA-GA adapter for the unmodified base model under rsLoRA's scale
            return ("lora_init=loraga cannot be saved with use_rslora (PEFT refuses it with per-module ranks): "
                    "set use_rslora: false")
        return None

    def initialize(self, model, recipe, calibration) -> None:
        """EVA moves rank between modules but keeps the sum of ranks, so the parameter count can
        differ from the recipe's (FFN ranks cost more than attention ranks); train reports it."""
        if recipe.training.lora_init != "eva":
            return
        batches = calibration()
        if not batches:
            raise RecipeError("training.lora_init=eva needs input batches to initialize from: pass calibration= to "
                              "apply_recipe (train and place() do)")
        initialize_eva(model, batches)

    def save(self, model, folder, recipe) -> None:
        save_lora(model, folder)

    def owns_adapter(self, config: dict) -> bool:
        return config.get("peft_type") == "LORA"

    def load(self, model, folder):
        from peft import PeftModel

        return PeftModel.from_pretrained(model, folder)

    def merge(self, model):
        return model.merge_and_unload()

    # ------------------------------------------------------------------ other tools' keys
    def peft_section(self, placement: dict[str, Rank], training) -> dict:
        ranks = {name: part.rank for name, part in placement.items()}
        return peft_section(tuple(Target(module=m, rank=r) for m, r in ranks.items()), default_rank(ranks),
                            training.lora_alpha, training.lora_dropout, training.use_rslora)

    def axolotl_section(self, placement: dict[str, Rank], training) -> dict | None:
        if _fractional_alpha(training):
            return None  # axolotl's schema refuses it; conversion_note says why
        return axolotl_lora({name: part.rank for name, part in placement.items()}, training.lora_alpha,
                            training.use_rslora)

    def conversion_note(self, tool: str, placement: dict[str, Rank], training=None) -> str | None:
        if tool == "axolotl" and training is not None and _fractional_alpha(training):
            return (f"axolotl reads lora_alpha as an integer and this recipe's training.lora_alpha is "
                    f"{training.lora_alpha:g}: set it to an integer for axolotl keys")
        return None


def _fractional_alpha(training) -> bool:
    return training.lora_alpha is not None and not float(training.lora_alpha).is_integer()
