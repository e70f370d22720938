"""PEFT's EVA as a LoRA init (training.lora_init: eva): A comes from the data, B starts at
zero (so θ0's function is unchanged), the run saves and reloads as a PEFT adapter."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_recipe

from ntk_advisor.errors import RecipeError
from ntk_advisor.inputs.models import load_classifier
from ntk_advisor.recipe.io import apply_overrides
from ntk_advisor.training.loop import train


def test_eva_init_trains_saves_and_reloads(tiny_model_folder, tiny_csv, tmp_path):
    from peft import PeftModel

    plain = train(tiny_recipe(tiny_model_folder, tiny_csv, method="lora", max_steps=3), tmp_path / "plain")
    recipe = apply_overrides(tiny_recipe(tiny_model_folder, tiny_csv, method="lora", max_steps=3),
                             ["training.lora_init=eva"])
    run = train(recipe, tmp_path / "eva")
    assert run.metrics["steps"] == 3 and (tmp_path / "eva" / "adapter" / "adapter_config.json").exists()
    # EVA chose A from the inputs: the saved A differ from the default (kaiming) init's run
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "eva" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "plain" / "adapter" / "adapter_model.safetensors"))
    keys = [k for k in a if "lora_A" in k]
    assert keys and set(keys) <= set(b)
    assert any(a[k].shape != b[k].shape or not torch.allclose(a[k], b[k]) for k in keys)
    assert sum(a[k].shape[0] for k in keys) == 2 + 4  # EVA moves rank between modules; the sum stays
    base = load_classifier(str(tiny_model_folder), num_labels=2).backbone
    reloaded = PeftModel.from_pretrained(base, tmp_path / "eva" / "adapter")
    assert sum("lora_A" in n for n, _ in reloaded.named_parameters()) == sum("lora_A" in k for k in a)


def test_eva_is_refused_for_rocoft_when_the_recipe_is_read(tiny_model_folder, tiny_csv):
    with pytest.raises(RecipeError, match="training.lora_init=eva is a LoRA setting; this recipe's method is rocoft"):
        apply_overrides(tiny_recipe(tiny_model_folder, tiny_csv, max_steps=1), ["training.lora_init=eva"])


def test_eva_without_batches_is_one_line(tiny_model_folder, tiny_csv):
    from ntk_advisor.training.apply import apply_recipe

    recipe = apply_overrides(tiny_recipe(tiny_model_folder, tiny_csv, method="lora"), ["training.lora_init=eva"])
    model = load_classifier(str(tiny_model_folder), num_labels=2).backbone
    with pytest.raises(RecipeError, match="lora_init=eva needs input batches"):
        apply_recipe(model, recipe, "classifier")
