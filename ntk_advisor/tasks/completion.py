"""The output of a generative model for the NTK: each example's completion log-likelihood.

For example n with tokens y_1..y_T and completion mask m (1 on completion tokens),

    f_n = Σ_{t ≥ 2} m_t · log p_θ(y_t | y_<t)              (one scalar per example)

so the structured route of `ntk.kernels` applies unchanged: one forward pass and one backward
pass of Σ_n f_n give every module's δ, and K[n, m] = ⟨∂f_n/∂W, ∂f_m/∂W⟩. The SFT loss of a
batch is −(1/tokens) Σ_n f_n, so the label-gradient scores of `ntk.signal` with targets
Ỹ = 1 (not centred) score rows and columns by the SFT loss gradient G = ∂/∂W (1/M) Σ_n f_n
(the signal LoRA-GA initializes from). There are no labels: the alignment and the kernel-ridge
accuracy of a classifier are undefined here; docs/sft.md says what stands in for them.

Cost: the causal LM's forward pass plus a log-softmax over the vocabulary at every position,
N·T·V floats (49k × 64 × 48 × 4 bytes = 0.6 GB for SmolLM2 at N = 64, T = 48).
"""

from __future__ import annotations

import torch
from torch import nn

from ..inputs.models import additive_mask


class CompletionLogLikelihood(nn.Module):
    """forward(input_ids, attention_mask, completion_mask) -> (N, 1) f_n of a causal LM.

    The mask is passed prebuilt (4-D, additive) as `models.SequenceLogits` does, so that
    ``torch.func.vmap`` can run the reference route through it.
    """

    prefix = "backbone."

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                completion_mask: torch.Tensor) -> torch.Tensor:
        mask = additive_mask(attention_mask, True, next(self.backbone.parameters()).dtype)
        logits = self.backbone(input_ids=input_ids, attention_mask=mask).logits  # (N, T, V)
        predicted = logits[:, :-1].log_softmax(-1).gather(-1, input_ids[:, 1:, None])[..., 0]  # (N, T - 1)
        return (predicted * completion_mask[:, 1:].to(predicted.dtype)).sum(1, keepdim=True)
