"""Kernels of row and column slices of a Linear weight (RoCoFT granularity, docs/method.md §4).

Training only rows R (output units) of W[d_out, d_in] keeps g_r[R, :] = Σ_t δ_{r,t}[R] x_{r,t}ᵀ,
and only columns C (input features) keeps g_r[:, C] = Σ_t δ_{r,t} x_{r,t}[C]ᵀ. So a slice's
kernel is the module kernel of the sliced activations:

    K_{R,C}[r, q] = Σ_{t,s} (x_{r,t}[C]·x_{q,s}[C]) (δ_{r,t}[R]·δ_{q,s}[R])

and Σ_i K_{row i} = Σ_j K_{col j} = K_W. Cost: the per-example route on the slice,
R²·|R|·|C| + R·T·|R|·|C| flops; no per-row N×N kernel is formed unless asked.
"""

from __future__ import annotations

import torch

from .contractions import per_example_route


def slice_kernel(x: torch.Tensor, delta: torch.Tensor, rows=None, cols=None) -> torch.Tensor:
    """Kernel (R×R, float64) of the weight slice W[rows, cols]; None means all.

    x (R, T, d_in), δ (R, T, d_out) as captured by `module_passes` (one pass; sum the
    results over passes for the `trace` reduction).
    """
    x = x.to(torch.float64) if cols is None else x[..., cols].to(torch.float64)
    delta = delta.to(torch.float64) if rows is None else delta[..., rows].to(torch.float64)
    no_targets = torch.zeros(0, x.shape[0], dtype=torch.float64)
    return per_example_route([(x, delta)], no_targets).kernel


def per_row_kernels(x: torch.Tensor, delta: torch.Tensor, rows) -> torch.Tensor:
    """(|rows|, R, R) kernels of single rows, materialized on request only: |rows|·R² floats."""
    g = torch.einsum("rti,rtj->irj", delta[..., rows].to(torch.float64), x.to(torch.float64))  # (|rows|, R, d_in)
    return g @ g.transpose(1, 2)


def per_col_kernels(x: torch.Tensor, delta: torch.Tensor, cols) -> torch.Tensor:
    """(|cols|, R, R) kernels of single columns."""
    g = torch.einsum("rti,rtj->jri", delta.to(torch.float64), x[..., cols].to(torch.float64))  # (|cols|, R, d_out)
    return g @ g.transpose(1, 2)


def bias_kernel(delta: torch.Tensor) -> torch.Tensor:
    """Kernel (R×R, float64) of a Linear's bias (docs/method.md §3):

        K_b[r, q] = (Σ_t δ_{r,t})·(Σ_s δ_{q,s})

    δ (R, T, d_out) of one pass; padded tokens have δ = 0. Cost R·T·d_out + R²·d_out flops.
    """
    summed = delta.to(torch.float64).sum(1)  # (R, d_out)
    return summed @ summed.T  # (R, R)
