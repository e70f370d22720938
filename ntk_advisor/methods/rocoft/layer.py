"""A Linear (or GPT-2 Conv1D) whose only trainable weights are chosen rows or columns.

W = W0 + Δ with Δ non-zero on an index set (RoCoFT, Kowsher et al. 2025; any set, not only
the first k). The base weight stays frozen, so gradients and optimizer state exist for the
slice alone. The forward pass adds the slice's contribution instead of rebuilding W:

    rows R:    y = x W0ᵀ + b,   y[..., R] += x Δ_Rᵀ          Δ_R: (|R|, d_in)
    columns C: y = x W0ᵀ + b + x[..., C] Δ_Cᵀ                 Δ_C: (d_out, |C|)

Δ starts at zero, so the wrapped module is exact at initialization. Merge, unmerge and
export share one `delta_weight()` (the dense Δ in W[d_out, d_in] layout), as PEFT's tuners do.
"""

from __future__ import annotations

import torch
from torch import nn


class RowColumnSlice(nn.Module):
    def __init__(self, base: nn.Module, axis: str, indices, transposed: bool = False):
        super().__init__()
        if axis not in ("rows", "cols"):
            raise ValueError(f"axis must be rows or cols, got {axis!r}")
        self.base = base
        self.axis = axis
        self.transposed = transposed  # Conv1D stores W as [d_in, d_out]
        for p in base.parameters():
            p.requires_grad_(False)
        weight = base.weight
        d_out, d_in = (weight.shape[1], weight.shape[0]) if transposed else tuple(weight.shape)
        # On the weight's device: a model already on a GPU (place(), a Trainer callback) would
        # otherwise index a CUDA tensor with a CPU index and fail at the first forward pass.
        self.register_buffer("indices", torch.as_tensor(list(indices), dtype=torch.long, device=weight.device),
                             persistent=True)
        shape = (len(self.indices), d_in) if axis == "rows" else (d_out, len(self.indices))
        self.delta = nn.Parameter(torch.zeros(shape, dtype=weight.dtype, device=weight.device))
        self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.merged:
            return y
        if self.axis == "rows":
            return y.index_add(-1, self.indices, x @ self.delta.T)  # (..., |R|) into (..., d_out)
        return y + x.index_select(-1, self.indices) @ self.delta.T  # (..., |C|) @ (|C|, d_out)

    def delta_weight(self) -> torch.Tensor:
        """Dense Δ in W[d_out, d_in] layout."""
        weight = self.base.weight
        full_shape = (weight.shape[1], weight.shape[0]) if self.transposed else tuple(weight.shape)
        dense = torch.zeros(full_shape, dtype=self.delta.dtype, device=self.delta.device)
        if self.axis == "rows":
            dense[self.indices] = self.delta
        else:
            dense[:, self.indices] = self.delta
        return dense

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self._apply_delta(+1.0)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self._apply_delta(-1.0)
            self.merged = False

    def _apply_delta(self, sign: float) -> None:
        delta = self.delta_weight().to(self.base.weight.dtype)
        self.base.weight.add_(sign * (delta.T if self.transposed else delta))

    def extra_repr(self) -> str:
        return f"axis={self.axis}, count={len(self.indices)}, merged={self.merged}"
