"""The recipe: a strict, versioned schema (``schema``), its YAML file (``io``), conversions to
PEFT and axolotl keys (``conversions``), and ``check`` against a model. Recipes are data and
never name code."""

from .io import apply_overrides, dump_recipe, load_recipe, parse_recipe, recipe_to_dict, save_recipe
from .schema import SCHEMA_VERSION, DataSpec, ModelSpec, Proximal, Recipe, Target, Training

__all__ = ["SCHEMA_VERSION", "DataSpec", "ModelSpec", "Proximal", "Recipe", "Target", "Training", "apply_overrides",
           "dump_recipe", "load_recipe", "parse_recipe", "recipe_to_dict", "save_recipe"]
