"""The YAML recipe: a strict, versioned pydantic schema; safe load/save; PEFT and axolotl keys.

A recipe is data. It is parsed with yaml.safe_load (no tags, no object construction), every
model forbids unknown keys, and nothing in it names code to import.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .._io import write_text_atomically
from ..errors import RecipeError

SCHEMA_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    name: str = Field(description="Model alias, local Hugging Face folder, or hub id.")
    num_labels: Annotated[int, Field(ge=2)] = 2
    task: Literal["classifier", "label-words"] = Field(
        "classifier", description="classifier: a new head on pooled features; label-words: prompting (decoder LMs).")
    head_init: Literal["random", "probe"] = Field(
        "random", description="classifier: start the new head from its seeded random init, or from a logistic-"
                              "regression probe on frozen features, fitted as `profile --head probe` fits its head (on the "
                              "recipe's training split; the profile also leaves its probe sample out).")

    @model_validator(mode="after")
    def _head_init_needs_a_new_head(self):
        if self.task == "label-words" and self.head_init == "probe":
            raise ValueError("head_init probe is for task classifier; label-words starts from the label words' rows")
        return self


class DataSpec(_Strict):
    source: str = Field(description="Builtin data set name or a data file / folder.")
    text_column: str = "text"
    label_column: str = "label"
    seed: int = 0
    max_length: Annotated[int, Field(ge=1)] = 64
    template: str | None = Field(None, description="label-words: the prompt, with {text} where the text goes.")
    label_words: tuple[str, ...] | None = Field(None, description="label-words: one single-token word per class.")


class Target(_Strict):
    """One targeted module: RoCoFT rows/columns (axis + indices) or a LoRA rank."""

    module: str
    axis: Literal["rows", "cols"] | None = None
    indices: tuple[Annotated[int, Field(ge=0)], ...] | None = None
    rank: Annotated[int, Field(ge=1)] | None = None
    score: float | None = None  # the evidence for this choice (objective gain per parameter)

    @model_validator(mode="after")
    def _one_kind(self):
        rocoft = self.axis is not None or self.indices is not None
        if rocoft and self.rank is not None:
            raise ValueError("a target is either RoCoFT (axis + indices) or LoRA (rank), not both")
        if rocoft and (self.axis is None or not self.indices):
            raise ValueError("a RoCoFT target needs both axis (rows|cols) and a non-empty indices list")
        if not rocoft and self.rank is None:
            raise ValueError("a target needs axis + indices (RoCoFT) or rank (LoRA)")
        if self.indices is not None and len(set(self.indices)) != len(self.indices):
            dup = sorted({i for i in self.indices if self.indices.count(i) > 1})
            raise ValueError(f"duplicate indices {dup[:5]}")
        return self


class Proximal(_Strict):
    strength: Annotated[float, Field(ge=0, alias="lambda")] = 0.0
    mode: Literal["plain", "selective"] = "selective"
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Training(_Strict):
    learning_rate: Annotated[float, Field(gt=0)] = 2e-3
    epochs: Annotated[int, Field(ge=1)] = 3
    max_steps: Annotated[int, Field(ge=1)] | None = None
    batch_size: Annotated[int, Field(ge=1)] = 32
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.06
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    max_grad_norm: Annotated[float, Field(gt=0)] = 1.0
    seed: int = 0
    train_bias: Literal["none", "targets", "all"] = "none"
    train_head: bool = True
    early_stopping_patience: Annotated[int, Field(ge=0)] = 2
    checkpoint_every: Annotated[int, Field(ge=1)] = 100
    lora_alpha: Annotated[float, Field(gt=0)] | None = None
    lora_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0


class Recipe(_Strict):
    schema_version: int = Field(description="Recipe format version; this ntk-advisor writes and reads 1.")
    model: ModelSpec
    data: DataSpec
    method: Literal["rocoft", "lora"]
    targets: tuple[Target, ...] = Field(min_length=1)
    proximal: Proximal = Proximal()
    training: Training = Training()
    evidence: dict = Field(default_factory=dict)
    peft: dict | None = None
    axolotl: dict | None = None

    @field_validator("schema_version")
    @classmethod
    def _version(cls, value):
        if value != SCHEMA_VERSION:
            raise ValueError(f"schema_version {value} is not supported; this ntk-advisor reads {SCHEMA_VERSION}")
        return value

    @model_validator(mode="after")
    def _consistent(self):
        names = [t.module for t in self.targets]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise ValueError(f"module '{dup}' is targeted twice; merge its entries")
        for t in self.targets:
            if self.method == "lora" and t.rank is None:
                raise ValueError(f"method lora needs a rank for '{t.module}'")
            if self.method == "rocoft" and t.axis is None:
                raise ValueError(f"method rocoft needs axis and indices for '{t.module}'")
        return self


def _field_path(error: dict) -> str:
    return ".".join(str(part) for part in error["loc"]) or "recipe"


def parse_recipe(document, source: str = "recipe") -> Recipe:
    """A parsed YAML document -> Recipe, or a RecipeError naming the first bad field."""
    if not isinstance(document, dict):
        raise RecipeError(f"{source}: the recipe must be a YAML mapping of keys, got {type(document).__name__}")
    try:
        return Recipe.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; recipes reject keys they do not know)"
        raise RecipeError(f"{source}: {_field_path(first)}: {message}") from None


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file '{path}' not found")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"{path}: not valid YAML{line}: {problem} (recipes are plain data; tags are refused)") from None
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not UTF-8 text") from None
    return parse_recipe(document, str(path))


def apply_overrides(recipe: Recipe, overrides: list[str]) -> Recipe:
    """key.path=value overrides (values parsed as YAML scalars), revalidated by the schema."""
    document = recipe_to_dict(recipe)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"override '{item}' is not key=value (for example training.learning_rate=1e-3)")
        node = document
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise RecipeError(f"override '{item}': '{part}' is not a section of the recipe")
            node = node[part]
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise RecipeError(f"override '{item}': the value is not a YAML scalar") from None
    return parse_recipe(document, "override")


def recipe_to_dict(recipe: Recipe) -> dict:
    return recipe.model_dump(mode="json", by_alias=True, exclude_none=True)


class _RecipeDumper(yaml.SafeDumper):
    """Block style for mappings; flow style only for lists of scalars (index lists stay on one line)."""


def _represent_list(dumper, data):
    flow = all(not isinstance(item, (dict, list, tuple)) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


def _represent_float(dumper, data):
    return dumper.represent_float(float(f"{data:.6g}") if math.isfinite(data) else data)


def _represent_str(dumper, data):
    # PyYAML with allow_unicode writes NEL / LS / PS raw, and reads them back as line breaks;
    # double quotes make it escape them (\N, \L, \P), so such a string round-trips.
    style = '"' if any(c in data for c in "\x85\u2028\u2029") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_RecipeDumper.add_representer(list, _represent_list)
_RecipeDumper.add_representer(float, _represent_float)
_RecipeDumper.add_representer(str, _represent_str)


def dump_recipe(recipe: Recipe, command: str | None = None, path: str | None = None) -> str:
    """YAML text with a header comment giving the command that runs it, keys grouped by section."""
    document = recipe_to_dict(recipe)
    header = [
        "# ntk-advisor recipe (schema version 1)",
        f"# Run it with: {command or 'ntk-advisor train THIS_FILE --out runs/NAME'}",
        f"# Check it against its model without training: ntk-advisor check {path or 'THIS_FILE'}",
        "",
    ]
    banners = {
        "model": "model and data",
        "method": "where the trainable budget goes",
        "proximal": "proximal term (lambda/2)*||theta - theta0||^2; selective: only when a step moves away from theta0",
        "training": "training settings",
        "evidence": "evidence behind the choices (kernels on the profile's probe sample)",
        "peft": "the same placement as peft.LoraConfig(**peft) keys (RoCoFT: LoRA of rank = rows per module)",
        "axolotl": "the same placement as axolotl keys",
    }
    parts = []
    for key, value in document.items():
        if key in banners:
            parts.append(f"\n# --- {banners[key]} ---")
        parts.append(yaml.dump({key: value}, Dumper=_RecipeDumper, sort_keys=False, width=100,
                               allow_unicode=True).rstrip())
    return "\n".join(header + parts) + "\n"


def save_recipe(recipe: Recipe, path: str | Path, command: str | None = None) -> Path:
    """Write atomically: readers never see half a recipe."""
    return write_text_atomically(Path(path), dump_recipe(recipe, command, str(path)))


def peft_section(recipe_targets, default_rank: int, alpha: float | None, dropout: float) -> dict:
    """A dict that peft.LoraConfig(**section) accepts: fully qualified, ^-anchored names."""
    ranks = {t.module: t.rank for t in recipe_targets}
    section = {
        "r": default_rank,
        "lora_alpha": alpha if alpha is not None else default_rank,
        "lora_dropout": dropout,
        "target_modules": list(ranks),  # full names: PEFT matches a name exactly or as a dotted suffix
        "rank_pattern": {f"^{re.escape(m)}": r for m, r in ranks.items() if r != default_rank},
        # α = r per module keeps the update scale α/r = 1 whatever the rank (docs/method.md §5).
        "alpha_pattern": {f"^{re.escape(m)}": r for m, r in ranks.items() if r != default_rank},
        "bias": "none",
    }
    return section
