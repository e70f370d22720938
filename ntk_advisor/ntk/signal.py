"""Label-gradient row and column scores over a large sample, in O(M) (no M×M kernel).

Which row of a module to train is decided by its label alignment (docs/method.md §4), and on a
64-example probe that score is noisy: the best row of a module changes with the sample. The
alignment numerator needs no kernel, so it can be taken over many more examples. With M
examples, model outputs stacked as f (M, O) (``OutputSpec.stack_outputs``) and centred
targets Ỹ (M, O) (``OutputSpec.output_targets``), define the label-weighted output mean

    s = (1/M) Σ_n Σ_o Ỹ[n, o] f[n, o],      G = ∂s/∂W   (d_out, d_in)

and score row i by ‖G[i, :]‖² and column j by ‖G[:, j]‖²; a rank-r update (LoRA) can hold at most
Σ_{j≤r} σ_j(G)², so the squared singular values of G are kept too. Rows, columns and the
spectrum each sum to ‖G‖²_F. G = (1/M) Σ_r w_r g_r with w = vec(Ỹ)
is the `full` reduction's projected gradient, so M² × these scores are exactly that
reduction's row / column alignment numerators a_i (kernels.py) on the same sample; for the
`margin` output they are the margin kernel's. G is minus the gradient of the mean
cross-entropy with the sample's class shares in place of the predicted probabilities.

Cost: one forward and one backward pass with weight gradients per batch, i.e. about
6·M·T·Σ P flops, plus one SVD per module (min(d_out, d_in)²·max(d_out, d_in)); memory: one
batch's activations, a float32 gradient and a float64 running sum per scored weight.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class LabelGradient:
    rows: torch.Tensor  # (d_out,) ‖G[i, :]‖²
    cols: torch.Tensor  # (d_in,) ‖G[:, j]‖²
    spectrum: torch.Tensor  # (min(d_out, d_in),) σ_j(G)², descending


@contextmanager
def _only_these_trainable(model: nn.Module, weights: Iterable[nn.Parameter]):
    """Gradients for ``weights`` only: every other parameter is frozen for the duration."""
    previous = {p: p.requires_grad for p in model.parameters()}
    for p in previous:
        p.requires_grad_(False)
    chosen = list(weights)
    for p in chosen:
        p.requires_grad_(True)
    try:
        yield chosen
    finally:
        for p, flag in previous.items():
            p.requires_grad_(flag)


def label_gradient_scores(
    model: nn.Module,
    batches: Iterable[tuple[Mapping[str, torch.Tensor], torch.Tensor]],
    weights: Mapping[str, tuple[nn.Parameter, bool]],
    stack_outputs: Callable[[torch.Tensor], torch.Tensor],
    examples: int,
    on_progress: Progress | None = None,
    total_batches: int = 0,
    reduce_sums: Callable[[dict[str, torch.Tensor]], None] | None = None,
) -> dict[str, LabelGradient]:
    """name -> LabelGradient (rows (d_out,), columns (d_in,), spectrum), float64, as in the module docstring.

    ``batches`` yields (inputs for model(**inputs) -> (B, C) outputs, Ỹ rows (B, O)); the Ỹ
    rows must already be centred over all M = ``examples`` examples. ``weights`` maps a name
    to (weight parameter, transposed), transposed for Conv1D weights stored [d_in, d_out].
    ``reduce_sums`` (processes that each saw a share of the batches) adds the partial sums of
    G in place before the scores, which are not linear in G, are taken.
    """
    names = list(weights)
    total = {name: torch.zeros(weights[name][0].shape, dtype=torch.float64,
                                    device=weights[name][0].device) for name in names}
    with _only_these_trainable(model, (weights[n][0] for n in names)) as params, torch.enable_grad():
        for done, (inputs, targets) in enumerate(batches, start=1):
            outputs = stack_outputs(model(**inputs))
            # The 1/M comes after the backward pass, in float64: divided first, a half-precision
            # backward (5-bit exponent in fp16) would flush the smallest gradients to zero.
            weighted = (targets.to(outputs.dtype) * outputs).sum()
            for name, grad in zip(names, torch.autograd.grad(weighted, params, allow_unused=True,
                                                             materialize_grads=True)):
                total[name] += grad.to(torch.float64) / examples
            if on_progress:
                on_progress("label gradient", done, total_batches)
    if reduce_sums is not None:
        reduce_sums(total)
    scores = {}
    for name in names:
        gradient = total[name].T if weights[name][1] else total[name]  # always (d_out, d_in)
        squared = gradient.square()
        # An overflowed G has no SVD; NaN spectra let the caller name the module instead of LAPACK failing.
        spectrum = (torch.linalg.svdvals(gradient).square() if torch.isfinite(gradient).all()
                    else torch.full((min(gradient.shape),), torch.nan, dtype=torch.float64,
                                 device=gradient.device))
        scores[name] = LabelGradient(squared.sum(1), squared.sum(0), spectrum)
    return scores
