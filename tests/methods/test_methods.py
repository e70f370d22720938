"""The method registry: every method honours the Method contract, and a new method is one
folder plus one register() line (a toy biases-only method, run recommend → train → export)."""

from __future__ import annotations

import pytest
import torch

from ntk_advisor.errors import RecipeError
from ntk_advisor.methods import (
    Rank,
    Slices,
    Whole,
    base,
    get_method,
    method_names,
    part_from_json,
    part_from_target,
    part_to_json,
    register,
    target_fields,
)
from ntk_advisor.recipe.schema import Target


@pytest.mark.parametrize("part", [Slices("rows", (0, 3)), Slices("cols", (5,)), Rank(4), Whole()])
def test_parts_round_trip_through_targets_and_json(part):
    assert part_from_target(Target(module="m", **target_fields(part))) == part
    assert part_from_json(part_to_json(part)) == part


def test_old_study_placements_still_read():
    assert part_from_json(["rows", [1, 2]]) == Slices("rows", (1, 2))
    assert part_from_json(8) == Rank(8)


@pytest.mark.parametrize("name", ["rocoft", "lora"])
def test_builtin_methods_declare_what_the_rest_asks_for(name):
    method = get_method(name)
    assert method.name == name and method.baselines and method.reference in method.baselines
    for placement, other in method.cross_arms:
        assert placement in get_method(other).baselines


def test_unknown_method_is_one_clear_error():
    with pytest.raises(RecipeError, match="unknown method 'dora'.*rocoft"):
        get_method("dora")


@pytest.fixture
def bias_only(monkeypatch):
    from toy_methods.bias_only import BiasOnly

    monkeypatch.setattr(base._REGISTRY, "entries", dict(base._REGISTRY.entries))  # registered for this test only
    return register(BiasOnly())


def test_a_new_method_runs_recommend_train_export(bias_only, tiny_model_folder, tiny_csv, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from ntk_advisor import RecommendConfig, export, profile, recommend, save_profile, train
    from ntk_advisor.profiling.config import ProfileConfig
    from ntk_advisor.recipe import apply_overrides, load_recipe, save_recipe
    from ntk_advisor.recipe.check import check_recipe

    assert "bias-only" in method_names()
    folder = save_profile(profile(ProfileConfig(model=str(tiny_model_folder), data=str(tiny_csv), samples=8,
                                                max_length=8, signal_samples=0)), tmp_path / "profile")
    recipe = recommend(folder, RecommendConfig(method="bias-only", budget=34 + 3 * 24))
    assert recipe.method == "bias-only" and recipe.peft is None
    assert all(t.axis is None and t.rank is None for t in recipe.targets)
    assert recipe.evidence["trainable"]["total"] <= 34 + 3 * 24
    baseline = recommend(folder, RecommendConfig(method="bias-only", budget=34 + 3 * 24, placement="first-modules"))
    assert baseline.targets
    path = save_recipe(recipe, tmp_path / "recipe.yaml")
    recipe = apply_overrides(load_recipe(path), ["training.max_steps=4", "training.learning_rate=0.05"])
    assert check_recipe(recipe)["total"] == recipe.evidence["trainable"]["total"]

    run = train(recipe, tmp_path / "run")
    assert run.metrics["trainable_parameters"] == recipe.evidence["trainable"]["total"]
    report = export(tmp_path / "run", "hf", tmp_path / "export")
    exported = AutoModelForSequenceClassification.from_pretrained(report.out)
    theta0 = AutoModelForSequenceClassification.from_pretrained(tiny_model_folder)
    trained = {t.module + ".bias" for t in recipe.targets}
    moved = {n for n, p in exported.named_parameters() if not torch.equal(p, theta0.get_parameter(n))}
    assert trained <= moved  # every advised bias trained
    assert all(n.endswith(".bias") or n.startswith("classifier.") for n in moved)  # and no weight did


def test_a_method_refuses_targets_without_its_keys(bias_only, tiny_model_folder, tiny_csv):
    from helpers import tiny_recipe

    from ntk_advisor.recipe import parse_recipe, recipe_to_dict

    document = recipe_to_dict(tiny_recipe(tiny_model_folder, tiny_csv))  # rocoft targets with axis + indices
    with pytest.raises(RecipeError, match="method bias-only needs the module name alone"):
        parse_recipe(document | {"method": "bias-only"})
    with pytest.raises(RecipeError, match="unknown method 'nope'"):
        parse_recipe(document | {"method": "nope"})
