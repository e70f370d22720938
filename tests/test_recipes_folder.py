"""Every recipe shipped in recipes/ parses, and (slow) matches its real model and budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from ntk_advisor.recipe.schema import load_recipe

RECIPES = sorted((Path(__file__).resolve().parent.parent / "recipes").rglob("*.yaml"))


def test_the_folder_has_recipes():
    assert len(RECIPES) >= 4, "run scripts/make_recipes.py"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_parses_and_has_evidence(path):
    recipe = load_recipe(path)
    assert path.read_text().startswith("# ntk-advisor recipe")
    assert recipe.evidence["trainable"]["total"] <= recipe.evidence["budget"]
    assert recipe.peft["target_modules"]


@pytest.mark.slow
@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_checks_against_its_model(path):
    from ntk_advisor.recipe.check import check_recipe

    report = check_recipe(load_recipe(path))
    assert report["total"] == load_recipe(path).evidence["trainable"]["total"]
