"""θ0 of a recipe: the model and the head that training starts from, and export rebuilds."""

from __future__ import annotations

from ..inputs import data as data_lib
from ..inputs import models
from ..recipe.schema import Recipe
from ..tasks import get_task, load_task_model


def load_for_recipe(recipe: Recipe, label_names=None, splits: data_lib.Splits | None = None,
                    device=None) -> tuple[models.LoadedModel, dict]:
    """θ0 of a recipe: the model with its head from the training seed, the label words, or a probe.

    Training and export both start here, so an exported run with a frozen head has the head it
    was trained with. ``device`` (a torch.device) is where the model goes before the probe is
    fit. Returns the model and a report of how the head was initialized.
    """
    seed = recipe.training.seed
    task = get_task(recipe.model.task)
    needs_data = (task.needs_label_names and not recipe.data.label_words and label_names is None) or \
        (recipe.model.head_init == "probe" and splits is None)
    dataset = data_lib.load_dataset(recipe.data.source, recipe.data.text_column,
                                    recipe.data.label_column) if needs_data else None
    loaded = load_task_model(recipe.model.name, recipe.model.num_labels, task=task.name, seed=seed,
                             template=recipe.data.template, label_words=recipe.data.label_words,
                             label_names=label_names if label_names is not None else
                             (dataset.label_names if dataset else None))
    if device is not None:
        loaded.logits_model.to(device)
    if recipe.model.head_init != "probe" or loaded.head_name is None:
        return loaded, task.head_report(loaded, seed)
    from ..profiling.config import PROBE_HEAD_EXAMPLES
    from ..profiling.profiler import fit_probe_head

    splits = splits or data_lib.split_dataset(dataset, seed=recipe.data.seed)
    return loaded, fit_probe_head(loaded, splits.train, splits.validation, seed=recipe.data.seed,
                                  examples=PROBE_HEAD_EXAMPLES, max_length=recipe.data.max_length)
