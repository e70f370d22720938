"""Output reductions and label targets: which scalars are differentiated, and what they should fit.

A reduction turns model outputs (N, C) into the kernel's rows and the passes that produce them:

=========  ==========  =======================  ===========================================
reduction  passes      kernel                   target Gram T = wᵀw for alignment
=========  ==========  =======================  ===========================================
trace      C (f_c)     Σ_c K_c, N×N             Ỹ Ỹᵀ, Ỹ one-hot labels centred (N×C)
margin     1 (f1−f0)   N×N (binary only)        ỹ ỹᵀ, ỹ = centred ±1 labels
full       C (f_c)     (N·C)×(N·C), r = n·C+c   vec(Ỹ) vec(Ỹ)ᵀ
=========  ==========  =======================  ===========================================

Kernel-target alignment A(K, T) = ⟨K, T⟩_F / (‖K‖_F ‖T‖_F) (Cristianini et al., 2002).
Regression targets for kernel ridge are uncentred: one-hot (trace, full) or ±1 (margin).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

REDUCTIONS = ("trace", "margin", "full")


@dataclass(frozen=True)
class OutputSpec:
    reduction: str
    num_outputs: int  # C, the model's logits
    labels: torch.Tensor  # (N,) int64 class ids in 0..C-1

    def __post_init__(self):
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction '{self.reduction}': use one of {', '.join(REDUCTIONS)}")
        if self.reduction == "margin" and self.num_outputs != 2:
            raise ValueError(f"the margin reduction needs exactly 2 outputs, the model has {self.num_outputs}")

    @property
    def num_passes(self) -> int:
        return 1 if self.reduction == "margin" else self.num_outputs

    @property
    def kernel_size(self) -> int:
        n = self.labels.shape[0]
        return n * self.num_outputs if self.reduction == "full" else n

    def stack_outputs(self, outputs: torch.Tensor) -> torch.Tensor:
        """(B, C) model outputs -> (B, passes) scalars that are differentiated."""
        if self.reduction == "margin":
            return (outputs[:, 1] - outputs[:, 0])[:, None]
        return outputs

    def pass_outputs(self, outputs: torch.Tensor) -> list[torch.Tensor]:
        stacked = self.stack_outputs(outputs)
        return [stacked[:, p] for p in range(stacked.shape[1])]

    def one_hot(self) -> torch.Tensor:
        return torch.nn.functional.one_hot(self.labels, self.num_outputs).to(torch.float64)

    def regression_targets(self) -> torch.Tensor:
        """(kernel_size, k) targets for kernel ridge regression."""
        if self.reduction == "margin":
            return (2.0 * self.labels.to(torch.float64) - 1.0)[:, None]
        if self.reduction == "full":
            return self.one_hot().reshape(-1, 1)
        return self.one_hot()

    def centred_targets(self) -> torch.Tensor:
        """(kernel_size, k) centred targets Ỹ; the alignment target Gram is Ỹ Ỹᵀ."""
        if self.reduction == "full":
            y = self.one_hot()
            return (y - y.mean(0)).reshape(-1, 1)
        y = self.regression_targets()
        return y - y.mean(0)

    def output_targets(self) -> torch.Tensor:
        """(N, passes) centred targets, one per differentiated output: Ỹ for trace and full,
        centred ±1 for margin. Σ_n,o Ỹ[n,o] f[n,o] is what the label gradient differentiates."""
        if self.reduction == "full":  # centred_targets flattens these into one column
            y = self.one_hot()
            return y - y.mean(0)
        return self.centred_targets()

    def target_weights(self) -> torch.Tensor:
        """(k, rows) weights w, the same for every pass: Σ_passes ⟨K_pass, wᵀw⟩ = ⟨K, T⟩."""
        return self.centred_targets().T.contiguous()

    @property
    def defined_alignment(self) -> bool:
        """Alignment is undefined (0/0) when the sample holds a single class."""
        return bool(self.labels.unique().numel() > 1)

    def predicted_classes(self, predictions: torch.Tensor) -> torch.Tensor:
        """Kernel-ridge predictions (kernel_size, k) -> (N,) class ids."""
        if self.reduction == "margin":
            return (predictions[:, 0] > 0).long()
        if self.reduction == "full":
            return predictions.reshape(-1, self.num_outputs).argmax(1)
        return predictions.argmax(1)
