"""ntk-advisor: NTK-guided placement of a fine-tuning budget (rows, columns, modules, LoRA ranks).

The public API is re-exported here lazily, so `ntk-advisor --help` does not pay for importing
torch and transformers.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "NtkProfile": "profiling.folder", "load_profile": "profiling.folder", "save_profile": "profiling.folder",
    "NtkAdvisorError": "errors", "DataError": "errors", "ModelError": "errors", "ProfileError": "errors",
    "RecipeError": "errors", "TrainError": "errors", "ExportError": "errors", "OutputError": "errors",
    "ValidateError": "errors", "ReportError": "errors",
    "ProfileConfig": "profiling.config", "profile": "profiling.profiler", "profile_model": "profiling.profiler",
    "load_dataset": "inputs.data", "split_dataset": "inputs.data", "probe_sample": "inputs.data",
    "load_classifier": "inputs.models", "discover_targets": "inputs.models", "encode": "inputs.models",
    "RecommendConfig": "advice.config", "recommend": "advice.recommend",
    "Recipe": "recipe.schema", "load_recipe": "recipe.io", "save_recipe": "recipe.io",
    "check_recipe": "recipe.check",
    "apply_recipe": "training.apply", "load_adapter": "training.apply", "Proximal": "training.apply",
    "train": "training.loop",
    "export": "exporting.export",
    "place": "placement", "PlacementCallback": "placement",
    "ValidateConfig": "study.config", "validate": "study.validate", "write_report": "study.report",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'ntk_advisor' has no attribute '{name}'")
