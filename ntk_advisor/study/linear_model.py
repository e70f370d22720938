"""The fully linear model of a placement: kernel ridge regression with its NTK at θ0 ([LIN]).

Linearize the model to be trained around its start θ0 (the placement's slices or LoRA
factors, and the head when it trains): f_lin(x) = f(x; θ0) + J(x)(θ − θ0). The minimizer of
the squared loss (1/2n) Σ_i ‖f_lin(x_i) − y_i‖² + (λ/2)‖θ − θ0‖² predicts

    f_lin(x) = f(x; θ0) + K(x, X) (K(X, X) + n·λ·I)⁻¹ (Y − f(X; θ0))

with K = J Jᵀ. We use the output-averaged kernel (1/C) Σ_c J_c J_cᵀ shared by every output:
exact for the head, whose C output blocks are all H Hᵀ (+1 for the bias) and whose cross
blocks are zero, and the usual approximation for the backbone's cross-output terms. This is the
"accuracy of the fully linear model" next to the fine-tuned accuracy in `validate --lambdas`;
the fine-tuned model minimizes cross-entropy, so the two agree only as far as the NTK picture
holds, which is what the sweep measures. Kernel ridge is scikit-learn's; λ = 0 gets a jitter of
1e-8 × mean diagonal so the solve stays defined.

Cost: (M + M_test)·C backward passes for J, M·C·P floats held for the training Jacobian.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..ntk.linearization import output_jacobian

JITTER = 1e-8


@dataclass
class PlacementKernels:
    train: torch.Tensor  # (M, M) float64 trace kernel on the fitting examples
    cross: torch.Tensor  # (M_test, M) kernel between evaluation and fitting examples
    f0_train: torch.Tensor  # (M, C) outputs at θ0
    f0_test: torch.Tensor  # (M_test, C)


def _jacobian_and_outputs(logits_model, params, encode, texts, max_length: int, batch_size: int):
    for start in range(0, len(texts), batch_size):
        batch = encode(list(texts[start : start + batch_size]), max_length)
        with torch.no_grad():
            outputs = logits_model(**batch).to(torch.float64)
        yield output_jacobian(logits_model, params, batch), outputs


def placement_kernels(logits_model, encode, train_texts: list[str], test_texts: list[str], max_length: int,
                      batch_size: int = 32) -> PlacementKernels:
    """Output-averaged NTK of the model's trainable parameters at their current values (θ0).

    ``encode(texts, max_length)`` tokenizes as the model reads (LoadedModel.encode).
    """
    logits_model.eval()
    params = {n: p for n, p in logits_model.named_parameters() if p.requires_grad}
    train_jac, f0_train = [], []
    for jac, outputs in _jacobian_and_outputs(logits_model, params, encode, train_texts, max_length, batch_size):
        train_jac.append(jac)
        f0_train.append(outputs)
    fit = torch.cat(train_jac).double()  # (M, C, P)
    del train_jac
    classes = fit.shape[1]
    train = torch.einsum("acp,bcp->ab", fit, fit) / classes
    cross, f0_test = [], []
    for jac, outputs in _jacobian_and_outputs(logits_model, params, encode, test_texts, max_length, batch_size):
        cross.append(torch.einsum("acp,bcp->ab", jac.double(), fit) / classes)
        f0_test.append(outputs)
    return PlacementKernels(*(t.cpu() for t in (train, torch.cat(cross), torch.cat(f0_train), torch.cat(f0_test))))


def linear_model_predictions(kernels: PlacementKernels, train_labels, strength: float) -> np.ndarray:
    """f_lin on the evaluation examples, (M_test, C), for proximal strength λ = ``strength``."""
    from sklearn.kernel_ridge import KernelRidge

    m, classes = kernels.f0_train.shape
    targets = np.eye(classes)[np.asarray(train_labels)] - kernels.f0_train.numpy()
    ridge = m * strength + JITTER * float(torch.diagonal(kernels.train).mean())
    regression = KernelRidge(alpha=ridge, kernel="precomputed").fit(kernels.train.numpy(), targets)
    return kernels.f0_test.numpy() + regression.predict(kernels.cross.numpy())


def linear_model_accuracy(kernels: PlacementKernels, train_labels, test_labels, strength: float) -> float:
    """Test accuracy of the linearized model fitted with proximal strength λ = ``strength``."""
    predicted = linear_model_predictions(kernels, train_labels, strength)
    return float((predicted.argmax(1) == np.asarray(test_labels)).mean())
