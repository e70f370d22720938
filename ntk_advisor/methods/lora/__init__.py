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
               train_bias: str) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    bias = {"none": "none", "all": "all", "targets": "lora_only"}[train_bias]
    return get_peft_model(model, LoraConfig(**lora_config_kwargs(targets, alpha, dropout, head_name, bias)))
