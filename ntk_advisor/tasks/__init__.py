"""Tasks, registered by name: ``classifier`` (a new head), ``label-words`` (a decoder LM's
label-word logits) and ``sft`` (a causal LM's completion log-likelihood). ``load_task_model`` loads a model and sets it up for its task; the rest of
ntk-advisor asks ``get_task(name)`` for the head, the loss and the metrics.
"""

from __future__ import annotations

import torch

from ..inputs import models
from .base import Task, get_task, register, resolve_task, task_names
from .classifier import Classifier
from .label_words import LabelWords
from .sft import SupervisedFineTuning

register(Classifier())
register(LabelWords())
register(SupervisedFineTuning())


def load_task_model(name: str, num_labels: int, *, task: str = "auto", dtype: torch.dtype = torch.float32,
                    seed: int = 0, with_tokenizer: bool = True, template: str | None = None, label_words=None,
                    label_names=None) -> models.LoadedModel:
    """``models.load_classifier``, then the task's θ0 (auto: label-words for decoder-only models)."""
    if task != "auto":
        own = get_task(task).load_model(name, dtype)  # an unknown name fails before the weights load
        if own is not None:
            return own
    loaded = models.load_classifier(name, num_labels=num_labels, dtype=dtype, seed=seed, with_tokenizer=with_tokenizer)
    config = loaded.backbone.config
    chosen = resolve_task(task, config.model_type, models.is_bidirectional(config))
    chosen.prepare(loaded, template=template, label_words=label_words, label_names=label_names, num_labels=num_labels)
    loaded.task = chosen.name
    return loaded


__all__ = ["Task", "get_task", "load_task_model", "register", "resolve_task", "task_names"]
