"""Facts about a model's architecture that need torch but not transformers: how many
positions it reads, what each Linear does and in which layer (from its name), and the
layers of a classification head."""

from __future__ import annotations

import re

import torch
from torch import nn

# Role of a Linear module, from the last parts of its qualified name. Order matters:
# BERT's attention-out is "attention.output.dense" and its FFN-out is "output.dense".
_ROLE_PATTERNS: list[tuple[str, str]] = [
    (r"(query|q_proj|q_lin|attn\.q)$", "query"),  # attn.q/k/v/o: MPNet
    (r"(key|k_proj|k_lin|attn\.k)$", "key"),
    (r"(value|v_proj|v_lin|attn\.v)$", "value"),
    (r"c_attn$", "qkv"),
    (r"(attention\.output\.dense|o_proj|out_lin|attn\.c_proj|attn\.o)$", "attention-out"),
    (r"(intermediate\.dense|gate_proj|up_proj|lin1|mlp\.c_fc)$", "ffn-in"),
    (r"(output\.dense|down_proj|lin2|mlp\.c_proj)$", "ffn-out"),
    (r"pooler\.dense$", "pooler"),
    (r"(classifier|score|lm_head)$", "head"),
]

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


def role_of(name: str) -> str:
    for pattern, role in _ROLE_PATTERNS:
        if re.search(pattern, name):
            return role
    return "other"


def layer_of(name: str) -> int | None:
    match = re.search(r"\.(?:layer|layers|h|block|blocks)\.(\d+)\.", name)
    return int(match.group(1)) if match else None


def head_module_name(model: nn.Module) -> str | None:
    """The output head of a classifier whose new weights are not known from a checkpoint's load
    report: the last Linear of its head, which may be a block (MPNet's classifier.out_proj)."""
    heads = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)
             and (role_of(n) == "head" or n.split(".")[0] in ("classifier", "score"))]
    return heads[-1] if heads else None
