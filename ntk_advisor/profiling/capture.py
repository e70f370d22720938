"""capture(): rebuild the profiled model from a profile folder (a classifier, or an SFT
profile's causal LM) and capture every block Linear's inputs x and output gradients δ on the
probe sample again (one forward pass, C backward passes). From them the kernel of any row or column set is exact (ntk.rows_cols),
which is what recommend searches over; the folder stores only whole-module kernels.

The captures of all modules take N·T·Σ(d_in + C·d_out) floats (5 GB for smollm2-135m at
N = 32, T = 128; 150 GB for a 7B decoder at N = 64, T = 512), so past a quarter of the free
memory they are held one group of modules at a time: reading a module outside the loaded
group reruns the passes for that group only, PASS_EXAMPLES examples at a time. Readers go
through modules in model order, so a sweep costs one set of passes per group, and the
kernels they ask for are kept (N×N each), so the search's candidates serve the placements
built from them without another sweep.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch

from ..devices import CAPTURE_SHARE, free_memory_bytes
from ..errors import RecipeError
from ..inputs import models
from ..ntk import OutputSpec
from ..ntk.contractions import projection
from ..ntk.kernels import kernel_rows, module_groups, module_passes
from ..ntk.rows_cols import slice_kernel
from .folder import NtkProfile

PASS_EXAMPLES = 8  # examples a pass takes when the captures are held a group at a time


class GroupedPasses:
    """x and δ of the probe sample for groups of modules, one group in memory at a time.

    ``run(names)`` returns ({name: x}, {name: [δ per pass]}) for those modules. ``groups`` are
    consecutive lists of names whose captures fit the cap. ``kernels`` keeps every slice
    kernel computed so far, keyed (module, axis, indices); views of one capture share it.
    """

    def __init__(self, run: Callable[[list[str]], tuple[dict, dict]], groups: list[list[str]]):
        self.run, self.groups = run, groups
        self.group_of = {name: i for i, group in enumerate(groups) for name in group}
        self.loaded: int | None = None
        self.x: dict[str, torch.Tensor] = {}
        self.deltas: dict[str, list[torch.Tensor]] = {}
        self.kernels: dict[tuple, torch.Tensor] = {}
        self.group_passes = 0  # how many times a group's passes ran (tests count the sweeps)

    def module(self, name: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
        group = self.group_of[name]
        if group != self.loaded:
            self.x, self.deltas = {}, {}  # the previous group goes before the next one is captured
            self.x, self.deltas = self.run(self.groups[group])
            self.loaded, self.group_passes = group, self.group_passes + 1
        return self.x[name], self.deltas[name]

    def holds(self, name: str) -> bool:
        return self.loaded is not None and self.group_of[name] == self.loaded


class _PerModule:
    """captured.x[name] / captured.deltas[name]: the module's capture, its group loaded on demand."""

    def __init__(self, passes: GroupedPasses, part: int):
        self.passes, self.part = passes, part

    def __getitem__(self, name: str):
        return self.passes.module(name)[self.part]


@dataclass
class Captured:
    """What recommend needs from the rebuilt model: targets, weights, and (on first use) x/δ
    per module and the logits.

    The passes run lazily because only slice kernels (RoCoFT placements, including the
    cross-method reference that recommend reports) and the grad-norm baseline read them: a
    caller that asks for LoRA placements alone never runs them.
    """

    profile: NtkProfile
    targets: dict[str, models.TargetModule]
    weights: dict[str, torch.Tensor]
    spec: OutputSpec
    head_parameters: int  # weight and, where the head has one, bias
    head_name: str | None = None  # the head module, e.g. "classifier": PEFT's modules_to_save
    passes: GroupedPasses | None = None
    forward: Callable[[], torch.Tensor] | None = None  # () -> float64 logits on the probe sample

    @property
    def passes_ran(self) -> bool:
        """Whether every module's x and δ are in memory, so a later read costs nothing more (held a group
        at a time, reading another group's reruns its passes)."""
        return self.passes is not None and self.passes.loaded is not None and len(self.passes.groups) == 1

    @property
    def x(self) -> _PerModule:
        return _PerModule(self.passes, 0)

    @property
    def deltas(self) -> _PerModule:
        return _PerModule(self.passes, 1)

    @cached_property
    def logits(self) -> torch.Tensor:
        return self.forward()

    @cached_property
    def grad_norms(self) -> dict[str, float]:
        """Only the grad-norm baseline needs these (a full d_out×d_in product per module)."""
        return _relative_gradient_norms(self.targets, self.x, self.deltas, self.weights, self.logits, self.spec)

    def slice_kernel(self, name: str, axis: str, indices) -> torch.Tensor:
        """K of the rows (columns) ``indices`` of module ``name``: from its captures when they are
        in memory, else as the sum of the single units' kernels kept from the search
        (K_R = Σ_{i∈R} K_i, docs/method.md §4) when every one was kept, else by recapturing."""
        key = (name, axis, tuple(indices))
        kept = self.passes.kernels
        if key not in kept:
            singles = [kept.get((name, axis, (i,))) for i in key[2]]
            if not self.passes.holds(name) and all(k is not None for k in singles):
                kept[key] = sum(singles)
            else:
                rows, cols = (list(key[2]), None) if axis == "rows" else (None, list(key[2]))
                x, deltas = self.passes.module(name)
                kept[key] = sum(slice_kernel(x, d, rows=rows, cols=cols) for d in deltas)
        return kept[key]

    def keep_unit_kernels(self, name: str, axis: str, indices, kernels: torch.Tensor) -> None:
        """Keep the single rows' (columns') kernels (|indices|, N, N) the search computed."""
        for index, kernel in zip(indices, kernels):
            self.passes.kernels.setdefault((name, axis, (int(index),)), kernel)


def capture(profile: NtkProfile, capture_mib: float = 0) -> Captured:
    """Rebuild the profiled model (checkpoint + saved head); x, δ of every block Linear are
    captured when first read, one group at a time under ``capture_mib`` (0: a quarter of the
    device's free memory, or the profile's own cap where that is larger)."""
    settings = profile.settings
    dtype = getattr(torch, settings.get("dtype", "float32"))
    from ..tasks import get_task, task_names

    # A task with its own model (sft: the causal LM, whose outputs are completion log-likelihoods)
    # loads it; the others rebuild the classifier and get their head from the profile.
    task = settings.get("task")
    loaded = get_task(task).load_model(settings["model"], dtype) if task in task_names() else None
    if loaded is None:
        loaded = models.load_classifier(settings["model"], num_labels=settings["num_outputs"], seed=settings["seed"],
                                        dtype=dtype, with_tokenizer=False)
    if profile.head:
        loaded.backbone.load_state_dict(profile.head, strict=False)
    profiled = set(settings["modules"])
    targets = {t.name: t for t in models.discover_targets(loaded.backbone) if t.layer is not None and t.name in profiled}
    if not targets:
        raise RecipeError("the profile holds no transformer-block modules to place a budget in")
    spec = OutputSpec(settings["reduction"], settings["num_outputs"], profile.inputs["labels"])
    weights = {n: models.weight_matrix(loaded.backbone, t).detach() for n, t in targets.items()}
    head = loaded.backbone.get_submodule(loaded.head_name) if loaded.head_name else None
    head_parameters = sum(p.numel() for p in head.parameters()) if head is not None else 0
    batch = {k: v for k, v in profile.inputs.items() if k != "labels"}  # an SFT profile adds completion_mask
    # The profile's cap leaves room for its contractions; recommend's search keeps only N×N
    # kernels, so it holds every capture at once when a quarter of the free memory allows (as
    # fast as one set of passes) and groups them only for a model whose captures exceed that.
    cap = capture_mib or max(settings.get("capture_mib") or 0, CAPTURE_SHARE * free_memory_bytes(loaded.device) / 2**20)
    modules = {name: loaded.backbone.get_submodule(name) for name in targets}
    groups = module_groups(modules, batch["input_ids"].numel(), spec, int(cap * 2**20), every_pass=True)
    # Held a group at a time, memory is short, and one pass's graph is then most of the peak (a
    # causal LM's logits over its vocabulary, 0.8 GB for smollm2-135m at 32 × 128 tokens before
    # their log-softmax and gradient).
    chunk = PASS_EXAMPLES if len(groups) > 1 else None
    passes = GroupedPasses(lambda names: _passes(loaded, batch, {n: targets[n] for n in names}, spec, chunk), groups)
    return Captured(profile, targets, weights, spec, head_parameters, loaded.head_name,
                    passes=passes, forward=lambda: _logits(loaded, batch, chunk))


def _example_chunks(batch: dict, chunk: int | None):
    """The batch in consecutive slices of ``chunk`` examples (one slice when None)."""
    n = batch["input_ids"].shape[0]
    for start in range(0, n, chunk or n):
        yield {k: v[start:start + (chunk or n)] for k, v in batch.items()}


def _logits(loaded, batch: dict, chunk: int | None = None) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([loaded.logits_model(**part) for part in _example_chunks(batch, chunk)]).to(torch.float64)


def _passes(loaded, batch: dict, targets: dict, spec: OutputSpec, chunk: int | None = None):
    """One forward pass and C backward passes: x and δ per module. With ``chunk``, the passes
    run that many examples at a time, which bounds the forward graph to chunk/N of its size;
    x and δ are the same, because examples never interact."""
    modules = {models.wrapped_name(n): loaded.backbone.get_submodule(n) for n in targets}
    x_parts = {name: [] for name in targets}
    delta_parts = {name: [[] for _ in range(spec.num_passes)] for name in targets}
    with torch.enable_grad():
        for part in _example_chunks(batch, chunk):
            for p, xs, ds in module_passes(loaded.logits_model, part, modules, spec):
                for name in targets:
                    if p == 0:
                        x_parts[name].append(xs[models.wrapped_name(name)])
                    delta_parts[name][p].append(ds[models.wrapped_name(name)])
    x, deltas = {}, {}
    for name in targets:
        x[name] = torch.cat(x_parts.pop(name))
        deltas[name] = [torch.cat(chunks) for chunks in delta_parts.pop(name)]
        if spec.reduction == "full":
            x[name], stacked = kernel_rows(x[name], deltas[name], spec)
            deltas[name] = [stacked]
    return x, deltas


def _relative_gradient_norms(targets, x, deltas, weights, logits, spec) -> dict[str, float]:
    """‖∇_W L‖ / ‖W‖ of the mean cross-entropy (logistic loss on the margin for `margin`)."""
    n = spec.labels.shape[0]
    if spec.reduction == "margin":
        residual = (torch.sigmoid(logits[:, 1] - logits[:, 0]) - spec.labels.double())[:, None]
    else:
        residual = torch.softmax(logits, dim=1) - spec.one_hot()
    norms = {}
    for name in targets:
        if spec.reduction == "full":  # rows r = n·C + c carry the residual of logit c
            grad = projection(residual.reshape(1, -1).to(x[name].dtype), deltas[name][0], x[name])[0]
        else:  # Σ_c r_c δ_c first: one d_out×d_in product instead of C
            combined = sum(residual[:, p, None, None].to(d.dtype) * d for p, d in enumerate(deltas[name]))
            grad = projection(torch.ones(1, n, dtype=x[name].dtype), combined, x[name])[0]
        norms[name] = float(grad.norm() / n / weights[name].norm())
    return norms
