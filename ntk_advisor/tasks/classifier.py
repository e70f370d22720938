"""The classifier task: a new C-way head on the model's pooled features (encoders by default)."""

from __future__ import annotations

from .base import Task


class Classifier(Task):
    """f(x) = W h(x) + b over the pooled features h; the head starts random or as a linear probe."""

    name = "classifier"
    default_head = "probe"

    def auto_for(self, bidirectional: bool) -> bool:
        return bidirectional
