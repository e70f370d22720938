"""Every recipe shipped in recipes/ parses, and (slow) matches its real model and budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from ntk_advisor.recipe.io import load_recipe

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").rglob("*.yaml"))


def test_the_folder_has_recipes():
    assert len(RECIPES) >= 4, "run scripts/make_recipes.py"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_parses_and_has_evidence(path):
    recipe = load_recipe(path)
    assert path.read_text().startswith("# ntk-advisor recipe")
    assert recipe.evidence["trainable"]["total"] <= recipe.evidence["budget"]
    assert recipe.peft["target_modules"]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_quotes_the_current_suite_evidence(path):
    """A shipped recipe's expected gain is the one advice/suite_evidence.json gives today: new
    suite results must reach the recipes (scripts/make_recipes.py), or a user reads old figures."""
    from ntk_advisor.advice.uncertainty import suite_gain

    recipe = load_recipe(path)
    quoted = recipe.evidence["uncertainty"]
    assert quoted.get("suite_gain_points") == suite_gain(recipe.method, quoted["rule"], recipe.evidence["budget"]), \
        "stale suite figures: rerun scripts/make_recipes.py"


@pytest.mark.slow
@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_checks_against_its_model(path):
    from ntk_advisor.recipe.check import check_recipe

    report = check_recipe(load_recipe(path))
    assert report["total"] == load_recipe(path).evidence["trainable"]["total"]


def _placement(recipe) -> list[tuple]:
    return [(t.module, t.axis, t.indices, t.rank) for t in recipe.targets]


@pytest.mark.slow
def test_shipped_recipes_are_what_the_code_recommends_today():
    """Recipes cannot go stale: profile and recommend again from the same settings (about two
    minutes on 2 cores) and compare the placements, not the timings."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_recipes", RECIPES[0].parents[2] / "scripts" / "make_recipes.py")
    make_recipes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_recipes)
    fresh = make_recipes.recommend_all()
    root = RECIPES[0].parents[2]
    assert {root / p for p in fresh} == set(RECIPES), "run scripts/make_recipes.py"
    stale = [str(p) for p, recipe in fresh.items() if _placement(load_recipe(root / p)) != _placement(recipe)]
    assert stale == [], f"stale recipes (rerun scripts/make_recipes.py): {stale}"
