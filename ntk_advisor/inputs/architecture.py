"""Facts about a model's architecture that need torch but not transformers: how many
positions it reads, and the new layers of a classification head."""

from __future__ import annotations

import torch
from torch import nn

_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "mpnet")  # positions start after the padding index


def max_positions(config) -> int | None:
    """Tokens a model can read: its position table, less the offset some families start it at."""
    table = getattr(config, "max_position_embeddings", None)
    if not isinstance(table, int):
        return None
    offset = (config.pad_token_id or 0) + 1 if config.model_type in _OFFSET_POSITIONS else 0
    return table - offset


@torch.no_grad()
def identity_before_head(backbone: nn.Module, head_name: str | None, new_names) -> None:
    """RoBERTa-style heads (MPNet, RoBERTa) put a new dense layer before the output Linear.
    Left at its random init and frozen, it would scramble the features the probe head is fitted
    on and the trained head reads; as the identity, the head is linear in tanh(h_<s>)."""
    if head_name is None:
        return
    parent = head_name.rpartition(".")[0]
    for name, module in backbone.named_modules():
        sibling = name != head_name and name.rpartition(".")[0] == parent  # classifier.dense next to .out_proj
        if sibling and name + ".weight" in new_names and isinstance(module, nn.Linear) \
                and module.in_features == module.out_features:
            module.weight.copy_(torch.eye(module.in_features, dtype=module.weight.dtype))
            if module.bias is not None:
                module.bias.zero_()
