"""capture(): rebuild the profiled model from a profile folder (a classifier, or an SFT
profile's causal LM) and capture every block Linear's inputs x and output gradients δ on the
probe sample again (one forward pass, C backward passes). From them the kernel of any row or column set is exact (ntk.rows_cols),
which is what recommend searches over; the folder stores only whole-module kernels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch

from ..errors import RecipeError
from ..inputs import models
from ..ntk import OutputSpec
from ..ntk.contractions import projection
from ..ntk.kernels import kernel_rows, module_passes
from ..ntk.rows_cols import slice_kernel
from .folder import NtkProfile


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
    passes: Callable[[], tuple[dict, dict]] | None = None  # () -> (x, deltas)
    forward: Callable[[], torch.Tensor] | None = None  # () -> float64 logits on the probe sample

    @cached_property
    def _captured(self) -> tuple[dict[str, torch.Tensor], dict[str, list[torch.Tensor]]]:
        return self.passes()

    @property
    def passes_ran(self) -> bool:
        """Whether x and δ are already in memory (a later read costs nothing more)."""
        return "_captured" in self.__dict__

    @property
    def x(self) -> dict[str, torch.Tensor]:
        return self._captured[0]

    @property
    def deltas(self) -> dict[str, list[torch.Tensor]]:
        return self._captured[1]

    @cached_property
    def logits(self) -> torch.Tensor:
        return self.forward()

    @cached_property
    def grad_norms(self) -> dict[str, float]:
        """Only the grad-norm baseline needs these (a full d_out×d_in product per module)."""
        return _relative_gradient_norms(self.targets, self.x, self.deltas, self.weights, self.logits, self.spec)

    def slice_kernel(self, name: str, axis: str, indices) -> torch.Tensor:
        rows, cols = (indices, None) if axis == "rows" else (None, indices)
        return sum(slice_kernel(self.x[name], d, rows=rows, cols=cols) for d in self.deltas[name])


def capture(profile: NtkProfile) -> Captured:
    """Rebuild the profiled model (checkpoint + saved head); x, δ of every block Linear are
    captured when first read."""
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
    return Captured(profile, targets, weights, spec, head_parameters, loaded.head_name,
                    passes=lambda: _passes(loaded, batch, targets, spec), forward=lambda: _logits(loaded, batch))


def _logits(loaded, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        return loaded.logits_model(**batch).to(torch.float64)


def _passes(loaded, batch: dict, targets: dict, spec: OutputSpec):
    """One forward pass and C backward passes: x and δ per module."""
    modules = {models.wrapped_name(n): loaded.backbone.get_submodule(n) for n in targets}
    x, deltas = {}, {n: [] for n in targets}
    with torch.enable_grad():
        for _, xs, ds in module_passes(loaded.logits_model, batch, modules, spec):
            for n in targets:
                x[n] = xs[models.wrapped_name(n)]
                deltas[n].append(ds[models.wrapped_name(n)])
    if spec.reduction == "full":
        for n in targets:
            x[n], stacked = kernel_rows(x[n], deltas[n], spec)
            deltas[n] = [stacked]
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
