"""apply_recipe(): put a recipe's trainable placement on a model, for our loop or anyone's.

Returns the model to train (RoCoFT slices placed in place, or a PEFT model for LoRA) and a
`Proximal` helper holding θ0 of every trainable tensor, so a user's own loop or Hugging Face
`Trainer` can add the proximal term as a loss (plain) or as a gradient rule (selective).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ExportError
from ..methods import get_method, method_for_adapter
from ..recipe.schema import Recipe


@dataclass
class Proximal:
    """(λ/2)‖θ − θ0‖² over the trainable tensors.

    plain: add `penalty(model)` to the loss. selective (after Selective Projection Decay,
    Tian et al. 2024): call `apply_selective(model)` after backward; per tensor it adds
    λ(θ − θ0) to the gradient only when the loss gradient's step moves θ away from θ0,
    i.e. when gᵀ(θ − θ0) < 0 (a step −ηg changes ‖θ−θ0‖² by −2η gᵀ(θ−θ0)).
    For LoRA, θ is (A, B) and θ0 their init, so the term is (λ/2)(‖A − A0‖² + ‖B‖²).
    """

    strength: float
    mode: str
    theta0: dict[str, torch.Tensor]

    def trainable(self, model: nn.Module):
        """(name, parameter) of the tensors under the term; θ0 follows each one to its device
        once (Accelerate or a Trainer moves the model after the recipe was applied)."""
        pairs = [(n, p) for n, p in model.named_parameters() if p.requires_grad and n in self.theta0]
        for name, p in pairs:
            if self.theta0[name].device != p.device:
                self.theta0[name] = self.theta0[name].to(p.device)
        return pairs

    def penalty(self, model: nn.Module) -> torch.Tensor:
        if self.strength == 0 or self.mode != "plain":
            return torch.zeros(())
        return 0.5 * self.strength * sum((p - self.theta0[n]).square().sum() for n, p in self.trainable(model))

    @torch.no_grad()
    def apply_selective(self, model: nn.Module) -> int:
        """Add the decay gradient where the step moves away from θ0; returns how many tensors got it."""
        if self.strength == 0 or self.mode != "selective":
            return 0
        applied = 0
        for name, p in self.trainable(model):
            if p.grad is None:
                continue
            offset = p - self.theta0[name]
            if float((p.grad * offset).sum()) < 0:
                p.grad.add_(offset, alpha=self.strength)
                applied += 1
        return applied

    @torch.no_grad()
    def add_gradient(self, model: nn.Module) -> None:
        """The proximal term as a gradient rule, for loops that cannot change the loss (a
        Trainer callback): plain adds λ(θ − θ0), the gradient of (λ/2)‖θ − θ0‖²; selective
        is `apply_selective`. Call after backward, before the optimizer step."""
        if self.strength == 0:
            return
        if self.mode == "selective":
            self.apply_selective(model)
            return
        for name, p in self.trainable(model):
            if p.grad is not None:
                p.grad.add_(p - self.theta0[name], alpha=self.strength)

    def distance(self, model: nn.Module) -> float:
        """‖θ − θ0‖ over the trainable tensors."""
        with torch.no_grad():
            return float(sum((p - self.theta0[n]).square().sum() for n, p in self.trainable(model)) ** 0.5)


def trainable_names(recipe: Recipe, model: nn.Module, head_name: str | None) -> list[str]:
    """Full-tensor trainables beyond the placement: the head and the biases the recipe asks for."""
    names = []
    if recipe.training.train_head and head_name:
        names += [n for n, _ in model.get_submodule(head_name).named_parameters(prefix=head_name)]
    targeted = {t.module for t in recipe.targets}
    for name, module in model.named_modules():
        bias = getattr(module, "bias", None)
        if not isinstance(bias, nn.Parameter) or name == head_name:
            continue
        if recipe.training.train_bias == "all" and (isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"):
            names.append(f"{name}.bias")
        elif recipe.training.train_bias == "targets" and name in targeted:
            names.append(f"{name}.bias")
    return names


def apply_recipe(model: nn.Module, recipe: Recipe, head_name: str | None = None,
                 calibration=None, gradient_step=None) -> tuple[nn.Module, Proximal]:
    """Place the recipe on ``model`` (a transformers model); returns (model to train, proximal helper).

    ``calibration()`` yields input batches for a data-driven init (LoRA's EVA);
    ``gradient_step(model)`` runs the task's loss forward and backward on training batches
    (LoRA-GA). θ0 is taken after either, so the proximal term pulls toward the initialized adapter.
    """
    extra = trainable_names(recipe, model, head_name)
    method = get_method(recipe.method)
    hooks = {"gradient_step": gradient_step} if recipe.training.lora_init == "loraga" else {}
    trained = method.apply(model, recipe, extra, head_name, **hooks)
    method.initialize(trained, recipe, calibration or (lambda: []))
    theta0 = {n: p.detach().clone() for n, p in trained.named_parameters() if p.requires_grad}
    return trained, Proximal(recipe.proximal.strength, recipe.proximal.mode, theta0)


def load_adapter(model: nn.Module, path) -> nn.Module:
    """Load a trained adapter (any registered method's folder) onto a fresh base model."""
    import json
    from pathlib import Path

    config_path = Path(path) / "adapter_config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError):
        raise ExportError(f"'{path}' is not an adapter folder (no readable adapter_config.json): pass the adapter/ "
                          "folder of a finished run") from None
    method = method_for_adapter(config if isinstance(config, dict) else {})
    if method is None:
        raise ExportError(f"'{config_path}' names no method this ntk-advisor knows: train it with this version")
    return method.load(model, Path(path))
