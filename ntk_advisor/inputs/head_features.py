"""The features a model's classification head sees: what the probe head is fitted on.

An encoder's head sees one pooled vector per example; a decoder's *ForSequenceClassification
head scores every token and returns the last non-padding one's logits, so its features are
that token's hidden state.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelError
from .models import LoadedModel, length_batches


def pooled_positions(backbone: nn.Module, inputs: dict) -> torch.Tensor:
    """The token whose head output a decoder's sequence classifier returns, per example: the
    last one that is not padding (transformers' rule for *ForSequenceClassification)."""
    ids = inputs["input_ids"]
    pad = backbone.config.get_text_config().pad_token_id
    if pad is None:
        return torch.full((ids.shape[0],), ids.shape[1] - 1, device=ids.device)
    positions = torch.arange(ids.shape[1], device=ids.device)
    return (positions * (ids != pad)).argmax(-1)


@torch.no_grad()
def head_inputs(loaded: LoadedModel, texts, max_length: int, batch_size: int = 64,
                batches: list[list[int]] | None = None) -> torch.Tensor:
    """The features the classification head sees, (N, d_in of the head) in the order of
    ``texts``, in eval mode; computed in length-sorted batches (`length_batches`). Given
    ``batches`` (a share of those batches), only their rows, stacked in the batches' order."""
    if loaded.head_name is None:
        raise ModelError("this model has no new classification head to fit")
    head = loaded.backbone.get_submodule(loaded.head_name)
    captured: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda mod, args, out: captured.append(args[0].detach()))
    share = batches
    batches = length_batches(texts, batch_size) if share is None else share
    try:
        for indices in batches:
            inputs = loaded.encode([texts[i] for i in indices], max_length)
            loaded.logits_model(**inputs)
            if captured[-1].dim() == 3:  # a decoder's head scores every token; its logits are the pooled token's
                captured[-1] = captured[-1][torch.arange(len(indices)), pooled_positions(loaded.backbone, inputs)]
    finally:
        hook.remove()
    features = torch.cat(captured).cpu() if captured else torch.zeros(0, head.weight.shape[-1])
    if share is not None:
        return features
    order = torch.tensor([i for indices in batches for i in indices], dtype=torch.long)
    return features[torch.argsort(order)]
