"""A placement in the keys other tools read: PEFT's LoraConfig and axolotl's YAML.

Methods build their recipe sections from these (methods/*/method.py); the keys are the ones
users already know (PEFT `target_modules` / `rank_pattern` / `alpha_pattern`; axolotl
`lora_*` and `unfrozen_parameters` with `[a:b]` row ranges).
"""

from __future__ import annotations

import re


def default_rank(ranks: dict[str, int]) -> int:
    """The most common rank: the one LoraConfig's `r` states, the others go in rank_pattern."""
    values = list(ranks.values())
    return max(set(values), key=values.count)


def peft_section(recipe_targets, default: int, alpha: float | None, dropout: float) -> dict:
    """A dict that peft.LoraConfig(**section) accepts: fully qualified, ^-anchored names."""
    ranks = {t.module: t.rank for t in recipe_targets}
    return {
        "r": default,
        "lora_alpha": alpha if alpha is not None else default,
        "lora_dropout": dropout,
        "target_modules": list(ranks),  # full names: PEFT matches a name exactly or as a dotted suffix
        "rank_pattern": {f"^{re.escape(m)}": r for m, r in ranks.items() if r != default},
        # α = r per module keeps the update scale α/r = 1 whatever the rank (docs/method.md §5);
        # a given α is one scale for all.
        "alpha_pattern": {f"^{re.escape(m)}": r for m, r in ranks.items() if r != default} if alpha is None else {},
        "bias": "none",
    }


def axolotl_lora(ranks: dict[str, int]) -> dict:
    default = default_rank(ranks)
    return {"adapter": "lora", "lora_r": default, "lora_alpha": default, "lora_target_modules": list(ranks),
            "lora_rank_pattern": dict(ranks)}


def axolotl_unfrozen(slices: dict[str, tuple[str, tuple[int, ...]]]) -> dict:
    """RoCoFT rows as `unfrozen_parameters` row ranges; columns need the whole weight unfrozen."""
    patterns = []
    for name, (axis, indices) in slices.items():
        stem = "^" + name.replace(".", r"\.") + r"\.weight$"
        if axis != "rows":  # axolotl slices rows only
            patterns.append(stem)
            continue
        indices = list(indices)
        runs, start = [], indices[0]
        for previous, current in zip(indices, indices[1:] + [None]):
            if current != previous + 1:
                runs.append((start, previous + 1))
                start = current
        patterns.extend(f"{stem}[{a}:{b}]" for a, b in runs)
    return {"unfrozen_parameters": patterns}
