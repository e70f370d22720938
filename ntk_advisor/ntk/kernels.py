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

The contractions themselves (per-example and Gram routes, their costs and the row and
column scores) are in `contractions`. Neither route ever holds the Jacobian of the whole
model: the per-example route holds one module's g at a time, in one reused buffer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

from .contractions import GradientBuffer, ModuleKernel, contract, from_gradients
from .targets import OutputSpec

Progress = Callable[[str, int, int], None]


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
    of one forward and C backward passes per group (the kernels do not change). The
    per-example route adds one reused buffer of R·P floats for the largest module (at most
    512 MiB; larger modules are formed in blocks).
    """
    buffer = GradientBuffer()
    steps_per_module = 1 if spec.reduction == "full" else spec.num_passes
    total = steps_per_module * len(modules)
    results: dict[str, ModuleKernel] = {}
    for group in module_groups(modules, _tokens(inputs), spec, max_group_bytes):
        offset = steps_per_module * len(results)

        def progress(stage: str, done: int, offset=offset) -> None:
            if on_progress:
                on_progress(stage, offset + done, total)

        group_modules = {name: modules[name] for name in group}
        results |= _group_kernels(model, inputs, group_modules, spec, route, progress, buffer)
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


def _group_kernels(model, inputs, modules, spec, route, on_progress, buffer) -> dict[str, ModuleKernel]:
    names = list(modules)
    kept: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    results: dict[str, ModuleKernel] = {}
    x_by_name: dict[str, torch.Tensor] = {}
    for p, x_by_name, deltas in module_passes(model, inputs, modules, spec):
        for i, name in enumerate(names):
            if spec.reduction == "full":
                kept[name].append(deltas[name])  # the cross-output blocks need every pass at once
                continue
            part = contract(x_by_name[name], deltas[name], spec.target_weights(), route, buffer)
            results[name] = part if name not in results else results[name].add_(part)
            on_progress("modules", p * len(names) + i + 1)
    if spec.reduction == "full":
        for i, name in enumerate(names):
            x_rows, delta_rows = kernel_rows(x_by_name[name], kept.pop(name), spec)
            results[name] = contract(x_rows, delta_rows, spec.target_weights(), route, buffer)
            on_progress("modules", i + 1)
    return results


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
