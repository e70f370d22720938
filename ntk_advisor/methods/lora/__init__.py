"""LoRA through PEFT, from a recipe's targets and ranks (α = r per module by default)."""

from __future__ import annotations

from torch import nn

from ...recipe.conversions import default_rank, peft_section


def lora_config_kwargs(targets, alpha: float | None, dropout: float, head_name: str | None, bias: str) -> dict:
    """peft.LoraConfig keyword arguments: the recipe's peft keys, plus the head and biases it trains."""
    ranks = {t.module: t.rank for t in targets}
    return peft_section(targets, default_rank(ranks), alpha, dropout) | {
        "modules_to_save": [head_name] if head_name else None, "bias": bias}


def apply_lora(model: nn.Module, targets, alpha: float | None, dropout: float, head_name: str | None,
               train_bias: str, eva_rho: float | None = None) -> nn.Module:
    """PEFT LoRA on ``targets``; with ``eva_rho``, configured for EVA (initialize_eva fills A)."""
    from peft import EvaConfig, LoraConfig, get_peft_model

    bias = {"none": "none", "all": "all", "targets": "lora_only"}[train_bias]
    kwargs = lora_config_kwargs(targets, alpha, dropout, head_name, bias)
    if eva_rho is not None:
        # EVA matches patterns against names that carry PeftModel's "base_model.model." prefix,
        # which a "^" anchor can never match; full names are unambiguous without it.
        unanchored = {key: {k.removeprefix("^"): v for k, v in kwargs[key].items()} for key in ("rank_pattern", "alpha_pattern")}
        kwargs |= unanchored | {"init_lora_weights": "eva", "eva_config": EvaConfig(rho=eva_rho)}
    return get_peft_model(model, LoraConfig(**kwargs))


def initialize_eva(model: nn.Module, batches) -> None:
    """PEFT's EVA: each adapted module's A from the top right-singular vectors of its inputs
    on ``batches`` (incremental PCA), ranks moved to where the explained variance is."""
    from peft import initialize_lora_eva_weights

    initialize_lora_eva_weights(model, dataloader=batches, show_progress_bar=False)
