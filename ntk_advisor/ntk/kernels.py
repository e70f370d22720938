"""Per-module empirical NTK of Linear weights: a structured route and a Jacobian reference route.

Notation (docs/method.md §1-4): N examples, T tokens, C model outputs, a Linear module
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
    merge_head_passes: bool = False,
    info: dict | None = None,
) -> Iterator[tuple[int, dict[str, torch.Tensor], dict[str, torch.Tensor]]]:
    """One forward pass, then one backward pass per output: yields (pass, x, δ) per pass.

    x[name] is (N, T, d_in), δ[name] = ∂(Σ_n f_{n,pass})/∂y is (N, T, d_out); because the
    examples never interact, δ[name][n] is example n's own output gradient. Only one pass's δ
    is alive at a time unless the caller keeps it. A merged head's x and δ are (N, C, H) and
    (N, C, C): its C output passes as C tokens.

    With ``merge_head_passes`` (`trace` only) the passes may be fewer than the outputs, with
    the same per-module sums over passes of every quadratic form of δ (kernels, energies,
    alignments): see `merged_head_passes`. ``info`` receives {"passes": count, "head": name}.
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
    merged = merged_head_passes(outputs, capture.outputs, x_by_name, modules, spec) if merge_head_passes else None
    head, passes = merged if merged else (None, spec.pass_outputs(outputs))
    if head is not None:
        # The head's own gradients are e_c ⊗ h, not of the merged form: its C passes ride in
        # the first pass as C tokens with orthogonal δ = e_c, whose cross terms vanish.
        c = spec.num_outputs
        x_by_name[head] = x_by_name[head].expand(n, c, -1)
        head_delta = torch.eye(c, dtype=outputs.dtype, device=outputs.device).expand(n, c, c)
    if info is not None:
        info.update(passes=len(passes), head=head)
    for p, scalar in enumerate(passes):
        grads = torch.autograd.grad(
            scalar.sum(),
            [capture.outputs[name] for name in names],
            retain_graph=p < len(passes) - 1,
            allow_unused=True,
            materialize_grads=True,
        )
        deltas = {name: _as_tokens(g.detach(), n) for name, g in zip(names, grads)}
        if head is not None:
            deltas[head] = head_delta if p == 0 else torch.zeros_like(head_delta)
        yield p, x_by_name, deltas


def merged_head_passes(outputs: torch.Tensor, module_outputs: Mapping[str, torch.Tensor],
                       x_by_name: Mapping[str, torch.Tensor], modules: Mapping[str, nn.Module], spec: OutputSpec
                       ) -> tuple[str, list[torch.Tensor]] | None:
    """(head name, pass scalars) when the `trace` kernel needs fewer backward passes than outputs.

    If the model's outputs are exactly those of a captured Linear head, f = W h + b (W: C×H),
    every other module's gradient of f_c is Σ_h W[c,h]·(its gradient of h_h). Then for any
    quadratic form Q of a module's gradients, Σ_c Q(g_{f_c}) = Σ_k Q(g_{q_kᵀf}) over an
    orthonormal basis q_1..q_r of W's column space (Wᵀ Σ_k q_k q_kᵀ W = WᵀW): r = rank W
    passes instead of C. A binary probe head has rows (−w/2, +w/2), so one pass, on
    (f_1 − f_0)/√2. Returns None when no captured module's output is the model's output, the
    head is not rank-deficient (eigenvalues of W Wᵀ below 1e-12 of the largest count as
    zero) or is zero, or the reduction is not `trace`.
    """
    if spec.reduction != "trace":
        return None
    for name, module in modules.items():
        produced = module_outputs[name]
        if produced.shape != outputs.shape or x_by_name[name].shape[1] != 1 or not torch.equal(produced, outputs):
            continue
        weight = (module.weight if isinstance(module, nn.Linear) else module.weight.T).detach().double()
        values, vectors = torch.linalg.eigh(weight @ weight.T)
        basis = vectors[:, values > values.max() * 1e-12]
        if not 0 < basis.shape[1] < spec.num_outputs:  # a zero head keeps its C passes (of zeros)
            return None
        basis = basis.to(outputs.dtype)
        return name, [outputs @ basis[:, k] for k in range(basis.shape[1])]
    return None


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
    bucket_by_length: bool = True,
) -> dict[str, ModuleKernel]:
    """Per-module weight kernels from one forward and C backward passes per length bucket (one
    for `margin`; rank(W) for `trace` when a rank-deficient head W is among ``modules``).

    model(**inputs) -> (N, C) outputs; ``modules`` maps names to nn.Linear / Conv1D modules
    of that model. Memory: the forward graph, plus x and one pass's δ of every module
    (N·T·Σ(d_in+d_out) floats; with `full`, the δ of all C passes). ``max_group_bytes`` caps
    that second part: modules are taken in consecutive groups whose x and δ fit, at the cost
    of one forward and C backward passes per group (the kernels do not change). The
    per-example route adds one reused 32 MiB buffer; g is formed in blocks that fit it. With ``bucket_by_length`` the passes run
    per `length_buckets` bucket, each padded only to its own longest example; the kernels
    come back in the order of ``inputs``.
    """
    order, buckets, spec = bucketed_inputs(inputs, spec) if bucket_by_length else (None, [dict(inputs)], spec)
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
        results |= _group_kernels(model, buckets, group_modules, spec, route, progress, buffer)
    if order is not None:
        rows = torch.argsort(order)  # example n sits at sorted position rows[n]
        if spec.reduction == "full":
            rows = (rows[:, None] * spec.num_outputs + torch.arange(spec.num_outputs, device=rows.device)).flatten()
        for result in results.values():
            result.kernel = result.kernel[rows][:, rows]
    return results


def bucketed_inputs(inputs: Mapping[str, torch.Tensor], spec: OutputSpec
                    ) -> tuple[torch.Tensor | None, list[dict[str, torch.Tensor]], OutputSpec]:
    """(order, bucket inputs, spec over the sorted examples) from `length_buckets`;
    (None, [inputs], spec) when the inputs cannot be cut."""
    plan = length_buckets(inputs)
    if plan is None:
        return None, [dict(inputs)], spec
    order, bounds = plan
    ordered = {key: value[order] for key, value in inputs.items()}
    buckets = [{key: value[start:end, :length] for key, value in ordered.items()} for start, end, length in bounds]
    return order, buckets, OutputSpec(spec.reduction, spec.num_outputs, spec.labels[order])


BUCKET_OVERHEAD = 0.08


def length_buckets(inputs: Mapping[str, torch.Tensor], max_buckets: int = 4
                   ) -> tuple[torch.Tensor, list[tuple[int, int, int]]] | None:
    """Examples sorted by length and cut into consecutive buckets padded to their own longest.

    A batch pads to its longest example, and the passes and the per-example contraction pay
    for every padded token. Length is the last attention-mask position + 1, so trailing
    padding is cut (left padding stays: no gain, no harm). Of equal-count cuts into
    B = 1..max_buckets buckets, the one with the fewest Σ_b n_b·T_b·(1 + 0.08·(B − 1)) wins:
    each extra, smaller batch costs about 8 % in the passes (minilm-l6 on 2 cores: two
    buckets were fastest at T = 32, four at T = 54, eight slower than four).
    Returns (order, [(start, end, T_b)]) over the sorted order, or None when the inputs are
    not (N, T) tensors with a 2-D attention mask.
    """
    mask = inputs.get("attention_mask")
    if mask is None or mask.dim() != 2 or any(value.shape[:2] != mask.shape for value in inputs.values()):
        return None
    n, t = mask.shape
    lengths = (mask.ne(0) * torch.arange(1, t + 1, device=mask.device)).amax(1).clamp_min(1)
    order = torch.argsort(lengths, stable=True)
    ordered = lengths[order].tolist()
    best: tuple[float, list[tuple[int, int, int]]] | None = None
    for count in range(1, min(max_buckets, n) + 1):
        cuts = [round(i * n / count) for i in range(count + 1)]
        bounds = [(start, end, ordered[end - 1]) for start, end in zip(cuts, cuts[1:])]
        cost = sum((end - start) * length for start, end, length in bounds) * (1 + BUCKET_OVERHEAD * (count - 1))
        if best is None or cost < best[0]:
            best = (cost, bounds)
    return order, best[1]


def _tokens(inputs: Mapping[str, torch.Tensor]) -> int:
    first = next(iter(inputs.values()))
    return int(first.shape[0] * (first.shape[1] if first.dim() > 1 else 1))


def module_groups(modules: Mapping[str, nn.Module], tokens: int, spec: OutputSpec,
                  max_group_bytes: int | None, every_pass: bool = False) -> list[list[str]]:
    """Consecutive groups of module names whose captured x and δ (tokens·(d_in+d_out) each,
    C passes of δ for `full`, or when ``every_pass`` keeps them all) stay under
    ``max_group_bytes``; None: one group. A module that alone exceeds the cap gets a group of its own."""
    names = list(modules)
    if max_group_bytes is None:
        return [names]
    groups, current, used = [], [], 0
    for name in names:
        weight = modules[name].weight
        d_out, d_in = weight.shape if isinstance(modules[name], nn.Linear) else weight.shape[::-1]  # Conv1D: [d_in, d_out]
        passes = spec.num_passes if spec.reduction == "full" or every_pass else 1
        size = tokens * (d_in + passes * d_out) * weight.element_size()
        if current and used + size > max_group_bytes:
            groups.append(current)
            current, used = [], 0
        current.append(name)
        used += size
    return groups + [current] if current else groups


def _group_kernels(model, buckets, modules, spec, route, on_progress, buffer) -> dict[str, ModuleKernel]:
    """The passes of every bucket in lockstep, so that each module and pass is contracted
    over all rows at once (the kernel's cross-bucket blocks need every bucket's x and δ)."""
    names = list(modules)
    weights = spec.target_weights()
    kept: dict[str, list[list[torch.Tensor]]] = {name: [[] for _ in buckets] for name in names}
    results: dict[str, ModuleKernel] = {}
    xs: list[dict[str, torch.Tensor]] = []
    infos = [{} for _ in buckets]
    passes = zip(*(module_passes(model, bucket, modules, spec, merge_head_passes=True, info=info)
                   for bucket, info in zip(buckets, infos)))
    for per_bucket in passes:
        p, xs = per_bucket[0][0], [x for _, x, _ in per_bucket]
        if len({(info["passes"], info["head"]) for info in infos}) > 1:
            raise ValueError("length buckets disagree on the model's head; pass bucket_by_length=False")
        scale = spec.num_passes / infos[0]["passes"]  # progress counts the outputs' passes
        for i, name in enumerate(names):
            if spec.reduction == "full":
                for b, (_, _, deltas) in enumerate(per_bucket):
                    kept[name][b].append(deltas[name])  # the cross-output blocks need every pass at once
                continue
            parts = [(x[name], deltas[name]) for _, x, deltas in per_bucket]
            part = contract(parts, weights, route, buffer)
            results[name] = part if name not in results else results[name].add_(part)
            on_progress("modules", round(scale * (p * len(names) + i + 1)))
    if spec.reduction == "full":
        for i, name in enumerate(names):
            parts = [kernel_rows(x[name], kept[name][b], spec) for b, x in enumerate(xs)]
            kept.pop(name)
            results[name] = contract(parts, weights, route, buffer)
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
