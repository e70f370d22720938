"""Fine-tuning methods, one folder each, registered by name: RoCoFT row/column slices (ours)
and LoRA (through PEFT). Everything that differs between methods is behind ``Method``
(base.py); the rest of ntk-advisor asks ``get_method(name)``.

Adding a method is one folder with a ``Method`` subclass plus one ``register`` line here (or
in the user's own code: ``ntk_advisor.methods.register(MyMethod())``); docs/design.md shows
a toy method that trains biases only.
"""

from .base import (
                   Candidates,
                   Method,
                   Part,
                   Placement,
                   Rank,
                   Slices,
                   Whole,
                   get_method,
                   method_for_adapter,
                   method_names,
                   part_from_json,
                   part_from_target,
                   part_to_json,
                   register,
                   target_fields,
)
from .lora.method import LoRA
from .rocoft.method import RoCoFT

register(RoCoFT())
register(LoRA())

__all__ = ["Candidates", "LoRA", "Method", "Part", "Placement", "Rank", "RoCoFT", "Slices", "Whole", "get_method",
           "method_for_adapter", "method_names", "part_from_json", "part_from_target", "part_to_json", "register",
           "target_fields"]
