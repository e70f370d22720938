"""RoCoFT: place row/column slices on a model, save/load them as an adapter, merge them in.

Adapter folder: ``adapter_model.safetensors`` ("<module>.delta", "<module>.indices" and every
other trained tensor by its parameter name, e.g. the head) + ``adapter_config.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .layer import RowColumnSlice

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"

__all__ = ["RowColumnSlice", "apply_rocoft", "load_rocoft_adapter", "merge_rocoft", "save_rocoft_adapter",
           "slice_modules"]


def _is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def apply_rocoft(model: nn.Module, targets, extra_trainable=()) -> dict[str, RowColumnSlice]:
    """Freeze ``model``, wrap each target as a RowColumnSlice, and unfreeze ``extra_trainable``.

    targets: iterable of (module name, axis, indices). extra_trainable: parameter names that
    train in full (the head, biases). Returns the wrappers by module name.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = {}
    for name, axis, indices in targets:
        base = model.get_submodule(name)
        if isinstance(base, RowColumnSlice):
            raise ValueError(f"module '{name}' already has a RoCoFT slice")
        if not isinstance(base, nn.Linear) and not _is_conv1d(base):
            raise ValueError(f"module '{name}' is a {type(base).__name__}, not a Linear or Conv1D")
        parent_name, _, child = name.rpartition(".")
        wrapper = RowColumnSlice(base, axis, indices, transposed=_is_conv1d(base))
        setattr(model.get_submodule(parent_name) if parent_name else model, child, wrapper)
        wrapped[name] = wrapper
    parameters = dict(model.named_parameters())
    for name in extra_trainable:
        parameters[_wrapped_name(name, wrapped)].requires_grad_(True)
    return wrapped


def _wrapped_name(name: str, wrapped) -> str:
    """A parameter name of the unwrapped model, as it reads once its module is wrapped."""
    module, _, leaf = name.rpartition(".")
    return f"{module}.base.{leaf}" if module in wrapped else name


def slice_modules(model: nn.Module) -> dict[str, RowColumnSlice]:
    return {n: m for n, m in model.named_modules() if isinstance(m, RowColumnSlice)}


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every trained tensor, by the unwrapped model's names; slices as .delta + .indices."""
    state = {}
    for name, module in slice_modules(model).items():
        state[f"{name}.delta"] = module.delta.detach()
        state[f"{name}.indices"] = module.indices
    for name, p in model.named_parameters():
        if p.requires_grad and not name.endswith(".delta"):
            state[name.replace(".base.", ".")] = p.detach()
    return state


def save_rocoft_adapter(model: nn.Module, folder: str | Path, config: dict) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous().cpu() for k, v in trainable_state(model).items()}, str(folder / ADAPTER_WEIGHTS))
    slices = {n: {"axis": m.axis, "count": len(m.indices)} for n, m in slice_modules(model).items()}
    (folder / ADAPTER_CONFIG).write_text(json.dumps({"method": "rocoft", "slices": slices, **config}, indent=2))


def load_rocoft_adapter(model: nn.Module, folder: str | Path) -> dict[str, RowColumnSlice]:
    """Place the adapter's slices on a fresh base model and load every trained tensor."""
    folder = Path(folder)
    config = json.loads((folder / ADAPTER_CONFIG).read_text())
    state = load_file(str(folder / ADAPTER_WEIGHTS))
    targets = [(n, s["axis"], state[f"{n}.indices"].tolist()) for n, s in config["slices"].items()]
    wrapped = apply_rocoft(model, targets)
    with torch.no_grad():
        for name, module in wrapped.items():
            module.delta.copy_(state[f"{name}.delta"])
        parameters = dict(model.named_parameters())
        for key, value in state.items():
            if key.endswith((".delta", ".indices")):
                continue
            parameters[_wrapped_name(key, wrapped)].copy_(value)
    return wrapped


def merge_rocoft(model: nn.Module) -> nn.Module:
    """Merge every slice into its base weight and put the plain module back: a standard model."""
    for name, module in slice_modules(model).items():
        module.merge()
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, module.base)
    return model
