"""check_recipe(): validate a recipe against its model without training."""

from __future__ import annotations

from pathlib import Path

from ..errors import RecipeError
from ..inputs import models
from ..methods import get_method, part_from_target
from .schema import Recipe


def trainable_counts(recipe: Recipe, targets: dict[str, models.TargetModule], head_params: int) -> dict[str, int]:
    """Weights in the placement, plus head and biases as the training settings ask."""
    method = get_method(recipe.method)
    weights = sum(method.part_cost(targets[t.module], part_from_target(t)) for t in recipe.targets)
    biases = 0
    if recipe.training.train_bias == "all":
        biases = sum(m.d_out for m in targets.values() if m.layer is not None and m.has_bias)
    elif recipe.training.train_bias == "targets":
        biases = sum(targets[t.module].d_out for t in recipe.targets if targets[t.module].has_bias)
    head = head_params if recipe.training.train_head else 0
    return {"weights": weights, "head": head, "biases": biases, "total": weights + head + biases}


def check_targets(recipe: Recipe, targets: dict[str, models.TargetModule]) -> None:
    """Every module exists and every part fits it (indices in range, rank small enough); raises
    RecipeError naming the first problem."""
    method = get_method(recipe.method)
    for position, t in enumerate(recipe.targets):
        where = f"targets.{position}"
        if t.module not in targets:
            close = [name for name in targets if name.endswith(t.module.split(".")[-1])][:2]
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise RecipeError(f"{where}.module: '{t.module}' is not a Linear module of {recipe.model.name}{hint}")
        problem = method.check_part(targets[t.module], part_from_target(t))
        if problem:
            field = "rank" if t.rank is not None else "indices"
            raise RecipeError(f"{where}.{field}: {problem}")


def check_recipe(recipe: Recipe) -> dict:
    """Load the recipe's model, check targets, recount the budget against the recipe's evidence."""
    from ..inputs.data import BUILTIN_DATASETS

    source = recipe.data.source
    if source not in BUILTIN_DATASETS and not Path(source).expanduser().exists():
        raise RecipeError(f"data.source: '{source}' does not exist here; point it at the data file (or a builtin: "
                          f"{', '.join(BUILTIN_DATASETS)}) before training")
    loaded = models.load_classifier(recipe.model.name, num_labels=recipe.model.num_labels, with_tokenizer=False)
    targets = {t.name: t for t in models.discover_targets(loaded.backbone)}
    check_targets(recipe, targets)
    head = targets.get(loaded.head_name) if loaded.head_name else None
    head_params = head.num_weights + (head.d_out if head.has_bias else 0) if head else 0
    counts = trainable_counts(recipe, targets, head_params)
    claimed = recipe.evidence.get("trainable", {}).get("total") if isinstance(recipe.evidence, dict) else None
    if claimed is not None and claimed != counts["total"]:
        raise RecipeError(f"evidence.trainable.total: the recipe claims {claimed} trainable parameters but its "
                          f"targets and settings add up to {counts['total']}")
    budget = recipe.evidence.get("budget") if isinstance(recipe.evidence, dict) else None
    if budget is not None and counts["total"] > budget:
        raise RecipeError(f"evidence.budget: the targets use {counts['total']} parameters, over the budget {budget}")
    return {"model": recipe.model.name, "method": recipe.method, "targets": len(recipe.targets), **counts}
