"""The task registry: what each task declares, how auto resolves, and clear errors."""

from __future__ import annotations

import pytest
import torch

from ntk_advisor.errors import ModelError, RecipeError
from ntk_advisor.tasks import get_task, load_task_model, resolve_task, task_names


def test_the_tasks_are_registered_and_auto_picks_by_architecture():
    assert set(task_names()) == {"classifier", "label-words", "sft"}
    assert resolve_task("auto", "bert", bidirectional=True).name == "classifier"
    assert resolve_task("auto", "llama", bidirectional=False).name == "label-words"
    with pytest.raises(ModelError, match="decoder-only.*bert"):
        resolve_task("label-words", "bert", bidirectional=True)
    with pytest.raises(ModelError, match="causal LM; bert is bidirectional"):  # auto never picks sft: the data does
        resolve_task("sft", "bert", bidirectional=True)
    with pytest.raises(ModelError, match="unknown --task 'qa'"):
        get_task("qa")


def test_what_the_tasks_declare():
    classifier, words = get_task("classifier"), get_task("label-words")
    assert classifier.default_head == "probe" and classifier.fits_probe_head
    assert words.default_head == "label-words" and not words.fits_probe_head and words.needs_label_names
    assert set(classifier.export_formats) < set(words.export_formats)  # only prompting exports a causal LM


def test_loaded_models_know_their_task(tiny_model_folder, tiny_llama_folder):
    encoder = load_task_model(str(tiny_model_folder), 2, task="auto")
    decoder = load_task_model(str(tiny_llama_folder), 2, task="auto", label_names=("negative", "positive"))
    assert (encoder.task, decoder.task) == ("classifier", "label-words")
    assert encoder.prompt is None and decoder.prompt is not None


def test_the_task_loss_and_metrics(tiny_model_folder, tiny_csv):
    from ntk_advisor.inputs.data import load_dataset

    task = get_task("classifier")
    logits, labels = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])
    assert float(task.loss(logits, labels)) == pytest.approx(float(torch.nn.functional.cross_entropy(logits, labels)))
    loaded = load_task_model(str(tiny_model_folder), 2)
    split = load_dataset(str(tiny_csv)).subset(range(20))
    metrics = task.evaluate(loaded.logits_model, loaded, split, 8)
    assert metrics["examples"] == 20 and 0 <= metrics["accuracy"] <= 1 and metrics["loss"] > 0


def test_recipes_name_a_registered_task(tiny_model_folder, tiny_csv):
    from helpers import tiny_recipe

    from ntk_advisor.recipe import parse_recipe, recipe_to_dict

    document = recipe_to_dict(tiny_recipe(tiny_model_folder, tiny_csv))
    with pytest.raises(RecipeError, match="model.task: unknown task 'regression'"):
        parse_recipe(document | {"model": document["model"] | {"task": "regression"}})
