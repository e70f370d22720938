"""Per-module empirical NTK of Linear weights: a structured route and a Jacobian reference route.

Notation (METHOD.md §1-4): N examples, T tokens, C model outputs, a Linear module
y = W x + b with W[d_out, d_in] applied at every token. For one scalar output f_r (r indexes
the *rows* of the kernel: examples n, or (example, output) pairs for the `full` reduction)
write δ_{r,t} = ∂f_r/∂y_t (d_out,) and x_{r,t} (d_in,). Then

    g_r = ∂f_r/∂W = Σ_t δ_{r,t} x_{r,t}ᵀ                       (d_out, d_in)
    K_W[r, q] = ⟨g_r, g_q⟩ = Σ_{t,s} (x_{r,t}·x_{q,s}) (δ_{r,t}·δ_{q,s})

Output reductions (as in neural-tangents): `trace` sums the C per-logit kernels (N×N, any C),
`margin` differentiates f_1 − f_0 (N×N, binary), `full` keeps every logit ((N·C)×(N·C),
rows ordered n-major: r = n·C + c).

Why structured: in a transformer the examples of a batch never interact (padding is
masked, there is no batch norm), so ONE forward pass and one backward pass per output give
every δ for every module at once; a reference route needs a Jacobian per module.

Routes, with their cost per module and pass (R kernel rows, P = d_out·d_in):

=============  ===========================================  ==================================
route          flops                                        wins when
=============  ===========================================  ==================================
per-example    R·T·P (form g_r) + R²·P (inner products)     T is large or d_in·d_out moderate
gram           R²·T²·(d_in + d_out) (token Grams)           R·T is small against d_in·d_out
jacobian       vmap(jacrev) per module: ~R forward+backward  never; it is the test oracle
=============  ===========================================  ==================================

`structured` picks the cheaper of the first two per module (and the Gram route when the
per-example gradients would not fit in ``max_gradient_bytes``). Neither route ever holds the
Jacobian of the whole model: the per-example route holds one module's g at a time.

Every route also returns row and column scores (METHOD.md §4): energies
e_i = Σ_r ‖g_r[i,:]‖² and label-alignment numerators a_i = Σ_k ‖Σ_r w_{k,r} g_r[i,:]‖²,
where the target weights w (k×R) define the target Gram T = wᵀw (``targets.target_weights``).
Σ_i e_i = tr K and Σ_i a_i = ⟨K, T⟩, for rows and for columns alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

from .targets import OutputSpec

Progress = Callable[[str, int, int], None]


@dataclass
class ModuleKernel:
    """One module's kernel (R×R, float64) and its row (d_out) / column (d_in) scores."""

    kernel: torch.Tensor
    row_energy: torch.Tensor
    col_energy: torch.Tensor
    row_alignment: torch.Tensor
    col_alignment: torch.Tensor

    def add_(self, other: "ModuleKernel") -> "ModuleKernel":
        for field in ("kernel", "row_energy", "col_energy", "row_alignment", "col_alignment"):
            getattr(self, field).add_(getattr(other, field))
        return self


def _projected_scores(projected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """projected (k, d_out, d_in) -> row and column squared norms summed over k."""
    squared = projected.square()
    return squared.sum((0, 2)), squared.sum((0, 1))


def from_gradients(grads: torch.Tensor, target_weights: torch.Tensor) -> ModuleKernel:
    """Kernel and scores from per-row gradients.

    grads: (R, d_out, d_in); target_weights: (k, R). Cost R²·P + k·R·P flops, R·P memory.
    """
    flat = grads.reshape(grads.shape[0], -1)
    squared = grads.square()
    row_a, col_a = _projected_scores(torch.einsum("kr,rij->kij", target_weights, grads))
    return ModuleKernel(flat @ flat.T, squared.sum((0, 2)), squared.sum((0, 1)), row_a, col_a)


def per_example_route(
    x: torch.Tensor, delta: torch.Tensor, target_weights: torch.Tensor, chunk_bytes: int = 8 * 2**20
) -> ModuleKernel:
    """x (R, T, d_in), δ (R, T, d_out) -> ModuleKernel via g_r = Σ_t δ_{r,t} x_{r,t}ᵀ.

    g is formed a block of output rows at a time (about ``chunk_bytes`` each): the full
    R×P tensor would be hundreds of MB per module, and fresh allocations that size cost
    more in page faults than the arithmetic. Blocks are contracted in the inputs' dtype and
    accumulated in float64.
    """
    R, _, d_in = x.shape
    d_out = delta.shape[-1]
    f64 = torch.float64
    weights = target_weights.to(x.dtype)
    step = max(1, chunk_bytes // (R * d_in * x.element_size()))
    result = ModuleKernel(torch.zeros(R, R, dtype=f64), torch.zeros(d_out, dtype=f64), torch.zeros(d_in, dtype=f64),
                          torch.zeros(d_out, dtype=f64), torch.zeros(d_in, dtype=f64))
    for start in range(0, d_out, step):
        rows = slice(start, start + step)
        g = torch.bmm(delta[..., rows].transpose(1, 2), x)  # (R, rows, d_in)
        flat = g.reshape(R, -1)
        result.kernel += (flat @ flat.T).to(f64)
        # Σ_r w_{k,r} g_r as one (k×R)@(R×P) product, squared in place; then g itself is
        # squared in place (K no longer needs it). Summing over r first leaves one small
        # (rows, d_in) array for both the row and the column scores: one pass over g, no copies.
        projected = (weights @ flat).reshape(-1, g.shape[1], d_in).square_().sum(0)
        result.row_alignment[rows] = projected.sum(1).to(f64)
        result.col_alignment += projected.sum(0).to(f64)
        energy = g.square_().sum(0)
        result.row_energy[rows] = energy.sum(1).to(f64)
        result.col_energy += energy.sum(0).to(f64)
    return result


def gram_route(x: torch.Tensor, delta: torch.Tensor, target_weights: torch.Tensor) -> ModuleKernel:
    """Same result as `per_example_route` from token Grams, never forming g_r.

    K[r,q] = Σ_{t,s} X[r,t,q,s] D[r,t,q,s] with X, D the (R·T)×(R·T) token Grams;
    e_i = Σ_r δ_r[:,i]ᵀ (x_r x_rᵀ) δ_r[:,i]; a needs only k matrices Σ_r w_{k,r} g_r = (w∘δ)ᵀ x.
    """
    R, T, _ = x.shape
    x_gram = (x.reshape(R * T, -1) @ x.reshape(R * T, -1).T).reshape(R, T, R, T)
    d_gram = (delta.reshape(R * T, -1) @ delta.reshape(R * T, -1).T).reshape(R, T, R, T)
    kernel = (x_gram * d_gram).sum((1, 3))
    x_self = torch.einsum("rti,rsi->rts", x, x)  # (R, T, T) per-row token Grams
    d_self = torch.einsum("rti,rsi->rts", delta, delta)
    row_e = torch.einsum("rts,rti,rsi->i", x_self, delta, delta)
    col_e = torch.einsum("rts,rtj,rsj->j", d_self, x, x)
    row_a, col_a = _projected_scores(_projection(target_weights.to(x.dtype), delta, x))
    return ModuleKernel(*(t.to(torch.float64) for t in (kernel, row_e, col_e, row_a, col_a)))


def _projection(w: torch.Tensor, delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Σ_r w_{k,r} g_r = Σ_{r,t} w_{k,r} δ_{r,t} x_{r,t}ᵀ, one (d_out×R·T)@(R·T×d_in) product per k."""
    R, T, d_out = delta.shape
    flat_x = x.reshape(R * T, -1)
    return torch.stack([(delta * w_k[:, None, None]).reshape(R * T, d_out).T @ flat_x for w_k in w])


def route_costs(rows: int, tokens: int, d_out: int, d_in: int) -> dict[str, float]:
    """Flop estimates of the two structured contractions for one module and pass."""
    params = d_out * d_in
    return {
        "per-example": rows * tokens * params + rows * rows * params,
        "gram": rows * rows * tokens * tokens * (d_in + d_out) + rows * tokens * tokens * (d_in + d_out),
    }


def choose_route(rows: int, tokens: int, d_out: int, d_in: int, max_gradient_bytes: float = 2**30) -> str:
    """The cheaper route by flops, unless per-example blocks would not fit in memory.

    The Gram route runs as a few large square matrix products, which BLAS executes more
    efficiently than the per-example route's batched thin ones; a 1.2× flop allowance
    matches the crossover measured on 2 CPU cores (benchmarks/bench_profile.py, T=8..64).
    """
    costs = route_costs(rows, tokens, d_out, d_in)
    if rows * d_in * 8 > max_gradient_bytes:  # one output row's block no longer fits
        return "gram"
    return "per-example" if costs["per-example"] <= 1.2 * costs["gram"] else "gram"


_ROUTES = {"per-example": per_example_route, "gram": gram_route}


class _Capture:
    """Forward hooks that keep each target module's input x and output y (for autograd.grad).

    Only the module outputs need gradients, so the forward runs with every parameter frozen
    and each captured output made a graph leaf where nothing upstream needs a gradient: the
    graph starts at the first captured module and saves no tensors for weight gradients.
    """

    def __init__(self, modules: Mapping[str, nn.Module]):
        self.inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = [module.register_forward_hook(self._hook(name)) for name, module in modules.items()]

    def _hook(self, name):
        def hook(module, args, output):
            self.inputs[name] = args[0].detach()
            if not output.requires_grad:
                output = output.detach().requires_grad_()
            self.outputs[name] = output
            return output

        return hook

    def remove(self):
        for handle in self._handles:
            handle.remove()


@contextmanager
def _frozen_parameters(model: nn.Module):
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in trainable:
            p.requires_grad_(True)


def _as_tokens(t: torch.Tensor, n: int) -> torch.Tensor:
    """(N, ..., d) -> (N, T, d); a pooled (N, d) input counts as one token."""
    return t.reshape(n, -1, t.shape[-1])


def module_passes(
    model: nn.Module,
    inputs: Mapping[str, torch.Tensor],
    modules: Mapping[str, nn.Module],
    spec: OutputSpec,
) -> Iterator[tuple[int, dict[str, torch.Tensor], dict[str, torch.Tensor]]]:
    """One forward pass, then one backward pass per output: yields (pass, x, δ) per pass.

    x[name] is (N, T, d_in), δ[name] = ∂(Σ_n f_{n,pass})/∂y is (N, T, d_out); because the
    examples never interact, δ[name][n] is example n's own output gradient. Only one pass's δ
    is alive at a time unless the caller keeps it.
    """
    capture = _Capture(modules)
    try:
        with _frozen_parameters(model), torch.enable_grad():
            outputs = model(**inputs)
    finally:
        capture.remove()
    missing = [name for name in modules if name not in capture.inputs]
    if missing:
        raise ValueError(f"modules not reached by the forward pass: {', '.join(missing[:3])}")
    n = outputs.shape[0]
    names = list(modules)
    x_by_name = {name: _as_tokens(capture.inputs[name], n) for name in names}
    passes = spec.pass_outputs(outputs)
    for p, scalar in enumerate(passes):
        grads = torch.autograd.grad(
            scalar.sum(),
            [capture.outputs[name] for name in names],
            retain_graph=p < len(passes) - 1,
            allow_unused=True,
            materialize_grads=True,
        )
        yield p, x_by_name, {name: _as_tokens(g.detach(), n) for name, g in zip(names, grads)}


def kernel_rows(x: torch.Tensor, deltas: list[torch.Tensor], spec: OutputSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the passes of one module into kernel rows for the `full` reduction (r = n·C + c)."""
    x_rows = x.repeat_interleave(spec.num_outputs, dim=0)
    return x_rows, torch.stack(deltas, dim=1).flatten(0, 1)


def structured_kernels(
    model: nn.Module,
    inputs: Mapping[str, torch.Tensor],
    modules: Mapping[str, nn.Module],
    spec: OutputSpec,
    route: str = "auto",
    on_progress: Progress | None = None,
    max_group_bytes: int | None = None,
) -> dict[str, ModuleKernel]:
    """Per-module weight kernels from one forward and C backward passes (one for `margin`).

    model(**inputs) -> (N, C) outputs; ``modules`` maps names to nn.Linear / Conv1D modules
    of that model. Memory: the forward graph, plus x and one pass's δ of every module
    (N·T·Σ(d_in+d_out) floats; with `full`, the δ of all C passes). ``max_group_bytes`` caps
    that second part: modules are taken in consecutive groups whose x and δ fit, at the cost
    of one forward and C backward passes per group (the kernels do not change).
    """
    steps_per_module = 1 if spec.reduction == "full" else spec.num_passes
    total = steps_per_module * len(modules)
    results: dict[str, ModuleKernel] = {}
    for group in module_groups(modules, _tokens(inputs), spec, max_group_bytes):
        offset = steps_per_module * len(results)

        def progress(stage: str, done: int, offset=offset) -> None:
            if on_progress:
                on_progress(stage, offset + done, total)

        results |= _group_kernels(model, inputs, {name: modules[name] for name in group}, spec, route, progress)
    return results


def _tokens(inputs: Mapping[str, torch.Tensor]) -> int:
    first = next(iter(inputs.values()))
    return int(first.shape[0] * (first.shape[1] if first.dim() > 1 else 1))


def module_groups(modules: Mapping[str, nn.Module], tokens: int, spec: OutputSpec,
                  max_group_bytes: int | None) -> list[list[str]]:
    """Consecutive groups of module names whose captured x and δ (tokens·(d_in+d_out) each,
    C passes of δ for `full`) stay under ``max_group_bytes``; None: one group. A module that
    alone exceeds the cap gets a group of its own."""
    names = list(modules)
    if max_group_bytes is None:
        return [names]
    groups, current, used = [], [], 0
    for name in names:
        weight = modules[name].weight
        d_out, d_in = weight.shape if isinstance(modules[name], nn.Linear) else weight.shape[::-1]  # Conv1D: [d_in, d_out]
        passes = spec.num_passes if spec.reduction == "full" else 1
        size = tokens * (d_in + passes * d_out) * weight.element_size()
        if current and used + size > max_group_bytes:
            groups.append(current)
            current, used = [], 0
        current.append(name)
        used += size
    return groups + [current] if current else groups


def _group_kernels(model, inputs, modules, spec, route, on_progress) -> dict[str, ModuleKernel]:
    names = list(modules)
    kept: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    results: dict[str, ModuleKernel] = {}
    x_by_name: dict[str, torch.Tensor] = {}
    for p, x_by_name, deltas in module_passes(model, inputs, modules, spec):
        for i, name in enumerate(names):
            if spec.reduction == "full":
                kept[name].append(deltas[name])  # the cross-output blocks need every pass at once
                continue
            part = _contract(x_by_name[name], deltas[name], spec.target_weights(), route)
            results[name] = part if name not in results else results[name].add_(part)
            on_progress("modules", p * len(names) + i + 1)
    if spec.reduction == "full":
        for i, name in enumerate(names):
            results[name] = _contract(*kernel_rows(x_by_name[name], kept.pop(name), spec), spec.target_weights(), route)
            on_progress("modules", i + 1)
    return results


def _contract(x: torch.Tensor, delta: torch.Tensor, target_weights: torch.Tensor, route: str) -> ModuleKernel:
    """Contract in the model's dtype (float64 models are exact), accumulate and return float64."""
    delta = delta.to(x.dtype)
    chosen = route if route != "auto" else choose_route(x.shape[0], x.shape[1], delta.shape[-1], x.shape[-1])
    return _ROUTES[chosen](x, delta, target_weights)


def jacobian_kernels(
    model: nn.Module,
    inputs: Mapping[str, torch.Tensor],
    weights: Mapping[str, tuple[str, bool]],
    spec: OutputSpec,
    chunk_size: int | None = 8,
    on_progress: Progress | None = None,
) -> dict[str, ModuleKernel]:
    """Reference route: ``vmap(jacrev)`` of the outputs w.r.t. one module's weight at a time.

    ``weights`` maps module name -> (parameter name in ``model``, transposed), transposed
    being True for Conv1D weights stored [d_in, d_out]. The model must accept one example
    with a leading batch dimension of 1 and be vmappable (prebuilt 4-D masks, no data-
    dependent branches). Cost per module: N forward+backward passes through the model,
    N·C·P floats for the Jacobian (chunked over examples by ``chunk_size``).
    """
    params = dict(model.named_parameters())
    keys = list(inputs)
    results: dict[str, ModuleKernel] = {}
    for i, (name, (param_name, transposed)) in enumerate(weights.items()):

        def outputs_of(weight, *example):
            batch = {k: v[None] for k, v in zip(keys, example)}
            return spec.stack_outputs(functional_call(model, {param_name: weight}, kwargs=batch))[0]

        jac = vmap(jacrev(outputs_of), in_dims=(None,) + (0,) * len(keys), chunk_size=chunk_size)(
            params[param_name].detach(), *(inputs[k] for k in keys)
        )  # (N, O, *weight shape)
        if transposed:
            jac = jac.transpose(-1, -2)
        jac = jac.detach().to(torch.float64)
        if spec.reduction == "full":
            results[name] = from_gradients(jac.flatten(0, 1), spec.target_weights())
        else:
            for p in range(jac.shape[1]):
                part = from_gradients(jac[:, p], spec.target_weights())
                results[name] = part if name not in results else results[name].add_(part)
        if on_progress:
            on_progress("modules", i + 1, len(weights))
    return results
