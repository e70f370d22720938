"""ntk-advisor: NTK-guided placement of a fine-tuning budget (rows, columns, modules, LoRA ranks).

The public API is re-exported here lazily, so `ntk-advisor --help` does not pay for importing
torch and transformers.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "NtkProfile": "artifacts", "load_profile": "artifacts", "save_profile": "artifacts",
    "NtkAdvisorError": "errors", "DataError": "errors", "ModelError": "errors", "ProfileError": "errors",
    "RecipeError": "errors", "TrainError": "errors",
    "ProfileConfig": "profiler", "profile": "profiler", "profile_model": "profiler",
    "load_dataset": "data", "split_dataset": "data", "probe_sample": "data",
    "load_classifier": "models", "discover_targets": "models",
    "RecommendConfig": "recommender", "recommend": "recommender",
    "Recipe": "recipe", "load_recipe": "recipe", "save_recipe": "recipe",
    "apply_recipe": "apply", "load_adapter": "apply",
    "train": "trainer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'ntk_advisor' has no attribute '{name}'")
