"""What a task is to ntk-advisor: what the model outputs for the kernel, the head θ0 starts
from, the loss and the metrics; and the registry that names tasks.

Every task's model is read through ``LoadedModel.logits_model(input_ids, attention_mask)``,
(N, C) outputs whose kernel the profiler computes; a task decides what those C outputs are
(a new head's logits, the label words' next-token logits) and how θ0's head is set.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from .._registry import Registry
from ..errors import ModelError

if TYPE_CHECKING:
    from ..inputs.models import LoadedModel


class Task(ABC):
    name: ClassVar[str]
    default_head: ClassVar[str]  # the profile's head under --head auto
    export_formats: ClassVar[tuple[str, ...]] = ("hf", "onnx")
    needs_label_names: ClassVar[bool] = False  # θ0 depends on the class names (default label words)
    fits_probe_head: ClassVar[bool] = True  # a recipe may start its head from a linear probe

    @abstractmethod
    def auto_for(self, bidirectional: bool) -> bool:
        """Whether --task auto picks this task for an encoder (True) or a decoder-only model."""

    def refuses(self, model_type: str, bidirectional: bool) -> str | None:
        """None, or why this task cannot run on the model (said to the user as it is)."""
        return None

    def prepare(self, loaded: LoadedModel, *, template, label_words, label_names, num_labels: int) -> None:
        """Set up θ0's outputs in place (a prompt, a head's rows); the default keeps the model as loaded."""

    def head_report(self, loaded: LoadedModel, seed: int) -> dict:
        """How θ0's head was set, when no probe was fitted."""
        new_head = loaded.head_name is not None and any(n.startswith(loaded.head_name + ".")
                                                        for n in loaded.new_parameter_names)
        return {"kind": "random", "seed": seed} if new_head else {"kind": "checkpoint"}

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Cross-entropy over the C outputs, (N, C) and (N,) -> a scalar."""
        return torch.nn.functional.cross_entropy(logits, labels, reduction=reduction)

    @torch.no_grad()
    def evaluate(self, logits_model, loaded: LoadedModel, split, max_length: int, batch_size: int = 64) -> dict:
        """Accuracy, macro-F1 and mean loss of ``split`` (eval mode)."""
        from sklearn.metrics import f1_score

        logits_model.eval()
        predictions, losses = [], []
        for start in range(0, len(split), batch_size):
            idx = range(start, min(start + batch_size, len(split)))
            batch = loaded.encode([split.texts[i] for i in idx], max_length)
            logits = logits_model(**batch)
            labels = torch.tensor([split.labels[i] for i in idx], device=logits.device)
            losses.append(self.loss(logits, labels, reduction="sum").item())
            predictions.append(logits.argmax(-1).cpu())
        predicted = torch.cat(predictions).numpy()
        truth = np.asarray(split.labels)
        return {"accuracy": float((predicted == truth).mean()),
                "macro_f1": float(f1_score(truth, predicted, average="macro")),
                "loss": sum(losses) / len(split), "examples": len(split)}


_REGISTRY: Registry[Task] = Registry("--task", ModelError, also=("auto",))
register = _REGISTRY.register
task_names = _REGISTRY.names
get_task = _REGISTRY.get


def resolve_task(name: str, model_type: str, bidirectional: bool) -> Task:
    """The task `name` stands for on this model (auto: by architecture), or a ModelError why not."""
    if name == "auto":
        return next(t for t in _REGISTRY.values() if t.auto_for(bidirectional))
    task = get_task(name)
    problem = task.refuses(model_type, bidirectional)
    if problem:
        raise ModelError(problem)
    return task
