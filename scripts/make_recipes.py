"""Regenerate the example recipes in recipes/ from real profiles (minilm-l6 on vader-movie and bbc-news).

    .venv/bin/python scripts/make_recipes.py        # about a minute per data set on 2 cores

tests/test_recipes_folder.py runs `recommend_all()` and fails when a shipped recipe's placement
differs from what the current code recommends from the same settings, so recipes cannot go
stale: rerun this script after changing the advice.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ntk_advisor import RecommendConfig, profile, recommend, save_profile, save_recipe
from ntk_advisor.profiling.config import ProfileConfig

REPO = Path(__file__).resolve().parent.parent
ROOT = Path("recipes") / "minilm-l6"  # relative to REPO, so the recipes' header commands are portable
SETTINGS = {"vader-movie": {"max_length": 64}, "bbc-news": {"max_length": 64}}  # as in the suite
PLANS = [("rocoft", 21_506, "rocoft-rows-21k"), ("lora", 100_000, "lora-100k")]


def recommend_all() -> dict[Path, object]:
    """Every shipped recipe as the current code recommends it: {path relative to REPO: Recipe}."""
    recipes = {}
    for data, extra in SETTINGS.items():
        with tempfile.TemporaryDirectory() as scratch:
            folder = save_profile(profile(ProfileConfig(model="minilm-l6", data=data, samples=64, **extra)),
                                  Path(scratch) / "profile")
            for method, budget, stem in PLANS:
                recipe = recommend(folder, RecommendConfig(method=method, budget=budget))
                recipe = recipe.model_copy(update={"evidence": recipe.evidence | {"profile": "(temporary)"}})
                recipes[ROOT / f"{data}-{stem}.yaml"] = recipe
    return recipes


def main() -> None:
    os.chdir(REPO)
    ROOT.mkdir(parents=True, exist_ok=True)
    for path, recipe in recommend_all().items():
        save_recipe(recipe, path, command=f"ntk-advisor train {path.as_posix()} --out runs/{path.stem}")
        print(f"wrote {path}: {recipe.evidence['trainable']['total']:,} trainable, predicted LOO accuracy "
              f"{recipe.evidence['predicted']['loo_accuracy']:.3f}")


if __name__ == "__main__":
    main()
