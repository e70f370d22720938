"""How linear was fine-tuning? The exact linearization gap along θ − θ0 (docs/method.md §8).

    f_lin(x) = f(x; θ0) + J(x)(θ − θ0),   J(x)(θ − θ0) by one forward-mode jvp
    gap = mean_x ‖f(x; θ) − f_lin(x)‖ / mean_x ‖f(x; θ) − f(x; θ0)‖

0 means the trained model is its linearization (the NTK picture held); near 1 means it is
not. Cost: one jvp (≈ 2-3 forward passes) per batch. Needs eager attention for forward AD.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vmap


def linearization_gap(model: nn.Module, theta: Mapping[str, torch.Tensor], theta0: Mapping[str, torch.Tensor],
                      inputs: Mapping[str, torch.Tensor], batch_size: int = 32) -> dict[str, float]:
    """gap, and the mean output change ‖f_θ − f_θ0‖, over ``inputs`` (model(**inputs) -> (N, C))."""
    names = list(theta)
    primal = tuple(theta0[n].detach() for n in names)
    tangent = tuple((theta[n] - theta0[n]).detach() for n in names)
    n_examples = next(iter(inputs.values())).shape[0]
    residual, change = [], []
    with torch.no_grad():
        for start in range(0, n_examples, batch_size):
            batch = {k: v[start : start + batch_size] for k, v in inputs.items()}

            def f(*params):
                return functional_call(model, dict(zip(names, params)), kwargs=batch)

            f0, directional = jvp(f, primal, tangent)
            trained = functional_call(model, dict(zip(names, (theta[n].detach() for n in names))), kwargs=batch)
            residual.append((trained - (f0 + directional)).norm(dim=-1))
            change.append((trained - f0).norm(dim=-1))
    residual_mean, change_mean = float(torch.cat(residual).mean()), float(torch.cat(change).mean())
    return {"linearization_gap": residual_mean / change_mean if change_mean > 0 else float("nan"),
            "output_change": change_mean}


def output_jacobian(model: nn.Module, params: Mapping[str, torch.Tensor], inputs: Mapping[str, torch.Tensor],
                    chunk_size: int = 8) -> torch.Tensor:
    """J (N, C, P): ∂f_c(x_n)/∂θ for the named parameters, flattened in ``params`` order.

    ``model(**inputs) -> (N, C)`` must accept one example with a leading batch dimension of 1
    and be vmappable (prebuilt 4-D masks). θ is the whole trainable set of a placement (slices,
    LoRA factors, head), so J Jᵀ summed over c is the placement's trace NTK at θ0 including the
    head. Cost: N·C backward passes (vmap over examples, chunked; jacrev over outputs);
    memory N·C·P floats for the result. Call under eval() so dropout is off.
    """
    names = list(params)
    keys = list(inputs)

    def outputs_of(values, *example):
        batch = {k: v[None] for k, v in zip(keys, example)}
        return functional_call(model, dict(zip(names, values)), kwargs=batch)[0]

    primal = tuple(params[n].detach() for n in names)
    jac = vmap(jacrev(outputs_of), in_dims=(None,) + (0,) * len(keys), chunk_size=chunk_size)(
        primal, *(inputs[k] for k in keys))  # tuple over params of (N, C, *shape)
    return torch.cat([j.flatten(2) for j in jac], dim=2).detach()
