"""Regenerate the example recipes in recipes/ from real profiles (minilm-l6 on vader-movie and bbc-news).

    .venv/bin/python scripts/make_recipes.py        # about a minute per data set on 2 cores
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ntk_advisor.advice.recommend import RecommendConfig, recommend
from ntk_advisor.profiling.folder import save_profile
from ntk_advisor.profiling.profiler import ProfileConfig, profile
from ntk_advisor.recipe.schema import save_recipe

REPO = Path(__file__).resolve().parent.parent
ROOT = Path("recipes") / "minilm-l6"  # relative to REPO, so the recipes' header commands are portable
SETTINGS = {"vader-movie": {"max_length": 64}, "bbc-news": {"max_length": 128}}
PLANS = [("rocoft", 21_506, "rocoft-rows-21k"), ("lora", 100_000, "lora-100k")]


def main() -> None:
    os.chdir(REPO)
    ROOT.mkdir(parents=True, exist_ok=True)
    for data, extra in SETTINGS.items():
        with tempfile.TemporaryDirectory() as scratch:
            folder = save_profile(profile(ProfileConfig(model="minilm-l6", data=data, samples=64, **extra)),
                                  Path(scratch) / "profile")
            for method, budget, stem in PLANS:
                recipe = recommend(folder, RecommendConfig(method=method, budget=budget))
                recipe = recipe.model_copy(update={"evidence": recipe.evidence | {"profile": "(temporary)"}})
                path = ROOT / f"{data}-{stem}.yaml"
                save_recipe(recipe, path, command=f"ntk-advisor train recipes/minilm-l6/{path.name} --out runs/{path.stem}")
                print(f"wrote {path}: {recipe.evidence['trainable']['total']:,} trainable, predicted LOO accuracy "
                      f"{recipe.evidence['predicted']['loo_accuracy']:.3f}")


if __name__ == "__main__":
    main()
