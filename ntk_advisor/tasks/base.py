"""What a task is to ntk-advisor: what the model outputs for the kernel, the head θ0 starts
from, the data it reads, the batches, the loss and the metrics; and the registry that names tasks.

Every task's model is read through ``LoadedModel.logits_model(**inputs)``, (N, C) outputs
whose kernel the profiler computes; a task decides what those C outputs are (a new head's
logits, the label words' next-token logits, a completion's log-likelihood) and how θ0's
head is set. The training loop asks the task for everything that differs between tasks.
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
    exports_vocabulary_logits: ClassVar[bool] = False  # the merged model is a causal LM, not a classifier
    # The validation metric a run keeps its best state by, and +1 when higher is better.
    selects_by: ClassVar[tuple[str, int]] = ("accuracy", 1)
    labelled: ClassVar[bool] = True  # examples carry labels: alignment, LOO accuracy and the suite's evidence apply
    peft_task_type: ClassVar[str | None] = None  # the task_type a recipe's peft section names; None: PEFT's default
    # Whether recommend may rebuild the capture passes to report other methods' default placements as
    # references. On a causal LM those passes are the advice's memory peak (docs/sft.md, "Cost").
    references_rerun_capture: ClassVar[bool] = True

    @abstractmethod
    def auto_for(self, bidirectional: bool) -> bool:
        """Whether --task auto picks this task for an encoder (True) or a decoder-only model."""

    def refuses(self, model_type: str, bidirectional: bool) -> str | None:
        """None, or why this task cannot run on the model (said to the user as it is)."""
        return None

    def prepare(self, loaded: LoadedModel, *, template, label_words, label_names, num_labels: int) -> None:
        """Set up θ0's outputs in place (a prompt, a head's rows); the default keeps the model as loaded."""

    def load_model(self, name: str, dtype: torch.dtype) -> LoadedModel | None:
        """The task's own model, or None: most tasks set up `models.load_classifier`'s (prepare)."""
        return None

    def meta_model(self, name: str, num_labels: int, dtype: torch.dtype) -> tuple[torch.nn.Module, str | None]:
        """(the model this task trains, built on the meta device; its head's name) for `plan --recipe`."""
        from ..inputs import models

        model = models.meta_classifier(name, num_labels, dtype=dtype)
        return model, models.head_module_name(model)

    def token_lengths(self, recipe, split, tokenizer) -> list[int]:
        """Tokens of each of ``split``'s examples as this task's batches read them (truncated)."""
        from ..inputs.models import encode

        return encode(tokenizer, list(split.texts), recipe.data.max_length)["attention_mask"].sum(1).tolist()

    def read_data(self, recipe):
        """The recipe's data as this task reads it (labelled texts), checked against its model."""
        from ..errors import TrainError
        from ..inputs.data import load_dataset

        dataset = load_dataset(recipe.data.source, recipe.data.text_column, recipe.data.label_column)
        if dataset.num_classes != recipe.model.num_labels:
            raise TrainError(f"model.num_labels is {recipe.model.num_labels} but the data has {dataset.num_classes} "
                             f"classes: set model.num_labels={dataset.num_classes} in the recipe (or as an override)")
        return dataset

    def profiled_dataset(self, settings: dict):
        """The data a profile with these settings read, as this task reads it (for provenance)."""
        from ..inputs.data import load_dataset

        return load_dataset(settings["data"], settings.get("text_column", "text"), settings.get("label_column", "label"))

    def heldout_text(self, data: str) -> str | None:
        """The text a run of this task scores for forgetting, or None: only generative tasks do."""
        return None

    def outputs_model(self, backbone: torch.nn.Module) -> torch.nn.Module:
        """The wrapper whose forward gives the task's (N, C) outputs from the Hugging Face model."""
        from ..inputs.models import SequenceLogits

        return SequenceLogits(backbone)

    def batch(self, loaded: LoadedModel, split, indices, max_length: int) -> tuple[dict, torch.Tensor]:
        """(model inputs, loss targets) of ``split``'s examples ``indices``, on the model's device."""
        inputs = loaded.encode([split.texts[i] for i in indices], max_length)
        return inputs, torch.tensor([split.labels[i] for i in indices], device=loaded.device)

    def better(self, metrics: dict, best: dict) -> bool:
        """Whether validation ``metrics`` beat the ``best`` so far (empty: nothing yet)."""
        key, sign = self.selects_by
        return not best or sign * metrics[key] > sign * best[key]

    def at_theta0(self, outputs_model, loaded: LoadedModel, recipe) -> dict:
        """What a finished run compares against, measured before the first step (forgetting)."""
        return {}

    def after_training(self, outputs_model, loaded: LoadedModel, splits, recipe, at_theta0: dict) -> dict:
        """Extra results of a finished run, at its best state (generations, for a generative task)."""
        return {}

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
