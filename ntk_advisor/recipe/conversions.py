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


def _lora_scale(default: int, alpha: float | None, rslora: bool) -> tuple[float, bool]:
    """(lora_alpha, whether α follows each module's rank): α = r per module when no α is given
    and not rsLoRA; rsLoRA's α defaults to 1."""
    if alpha is not None:
        return alpha, False
    return (1.0, False) if rslora else (default, True)


def peft_section(recipe_targets, default: int, alpha: float | None, dropout: float, rslora: bool = False) -> dict:
    """A dict that peft.LoraConfig(**section) accepts: fully qualified, ^-anchored names.

    Scale of each module's update: α/r with α = r per module (1 whatever the rank;
    docs/method.md §5) when ``alpha`` is None, else one α for all; with ``rslora``, PEFT's
    α/√r with α = ``alpha`` or 1, so that a module's kernel at θ0 does not grow with its rank."""
    ranks = {t.module: t.rank for t in recipe_targets}
    lora_alpha, per_rank = _lora_scale(default, alpha, rslora)
    section = {
        "r": default,
        "lora_alpha": lora_alpha,
        "lora_dropout": dropout,
        "target_modules": list(ranks),  # full names: PEFT matches a name exactly or as a dotted suffix
        "rank_pattern": {f"^{re.escape(m)}": r for m, r in ranks.items() if r != default},
        "alpha_pattern": {f"^{re.escape(m)}": r for m, r in ranks.items() if r != default} if per_rank else {},
        "bias": "none",
    }
    return section | ({"use_rslora": True} if rslora else {})


def with_training_scale(peft: dict | None, recipe_targets, training, method: str) -> dict | None:
    """A LoRA recipe's ``peft`` section with the scale keys (α, alpha_pattern, use_rslora,
    dropout) of its ``training`` section: an override or a hand edit of training must not
    leave TRL a different scale from the one ntk-advisor trains at."""
    if peft is None or method != "lora":
        return peft
    ranks = {t.module: t.rank for t in recipe_targets}
    fresh = peft_section(recipe_targets, default_rank(ranks), training.lora_alpha, training.lora_dropout,
                         training.use_rslora)
    kept = {key: value for key, value in peft.items() if key != "use_rslora"}
    return kept | {key: fresh[key] for key in ("lora_alpha", "alpha_pattern", "lora_dropout")} | (
        {"use_rslora": True} if training.use_rslora else {})


def axolotl_lora(ranks: dict[str, int], alpha: float | None = None, rslora: bool = False) -> dict:
    """axolotl's LoRA keys (its `LoraConfig` schema), with the scale of peft_section."""
    default = default_rank(ranks)
    lora_alpha, per_rank = _lora_scale(default, alpha, rslora)
    return {"adapter": "lora", "lora_r": default, "lora_alpha": int(lora_alpha),  # an int in axolotl's schema
            "lora_target_modules": list(ranks),
            # axolotl hands these to PEFT, which reads each key as a regex over a name's dotted suffix
            "lora_rank_pattern": {re.escape(m): r for m, r in ranks.items()},
            "lora_alpha_pattern": {re.escape(m): r for m, r in ranks.items() if r != default} if per_rank else {}} | (
        {"peft_use_rslora": True} if rslora else {})


def axolotl_pattern(parameter: str) -> str:
    """One whole parameter name as axolotl's `unfrozen_parameters` reads it.

    axolotl escapes every '.' itself (utils/freeze.py: a dot not followed by '+' becomes a
    literal dot), so the name is written with plain dots: an escaped ``\\.`` would become
    ``\\\\.``, a literal backslash, and match nothing. ``^`` and ``$`` pin the whole name.
    """
    return f"^{parameter}$"


def axolotl_unfrozen(slices: dict[str, tuple[str, tuple[int, ...]]]) -> dict:
    """RoCoFT rows as `unfrozen_parameters` row ranges; columns need the whole weight unfrozen."""
    patterns = []
    for name, (axis, indices) in slices.items():
        stem = axolotl_pattern(f"{name}.weight")
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


def axolotl_with_head(section: dict | None, head_module: str | None) -> dict | None:
    """The head a recipe trains, in axolotl's terms: LoRA's ``lora_modules_to_save``, or the
    head's weight and bias among a full-weight run's ``unfrozen_parameters``; otherwise axolotl
    freezes the head at its random init."""
    if section is None or head_module is None:
        return section
    if "adapter" in section:
        return section | {"lora_modules_to_save": [head_module]}
    if "unfrozen_parameters" in section:
        head = [axolotl_pattern(f"{head_module}.{kind}") for kind in ("weight", "bias")]
        return section | {"unfrozen_parameters": section["unfrozen_parameters"] + head}
    return section
