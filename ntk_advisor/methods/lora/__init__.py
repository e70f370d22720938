"""LoRA through PEFT, from a recipe's targets and ranks (α = r per module by default)."""

from __future__ import annotations

import re

from torch import nn


def lora_config_kwargs(targets, alpha: float | None, dropout: float, head_name: str | None, bias: str) -> dict:
    """peft.LoraConfig keyword arguments: exact module names, per-module ranks as ^-anchored patterns."""
    ranks = {t.module: t.rank for t in targets}
    default = max(set(ranks.values()), key=list(ranks.values()).count)
    patterns = {f"^{re.escape(m)}": r for m, r in ranks.items() if r != default}
    return {
        "r": default,
        "lora_alpha": alpha if alpha is not None else default,
        "rank_pattern": patterns,
        "alpha_pattern": {} if alpha is not None else dict(patterns),
        "lora_dropout": dropout,
        "target_modules": list(ranks),
        "modules_to_save": [head_name] if head_name else None,
        "bias": bias,
    }


def apply_lora(model: nn.Module, targets, alpha: float | None, dropout: float, head_name: str | None,
               train_bias: str) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    bias = {"none": "none", "all": "all", "targets": "lora_only"}[train_bias]
    return get_peft_model(model, LoraConfig(**lora_config_kwargs(targets, alpha, dropout, head_name, bias)))
