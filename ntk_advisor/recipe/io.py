"""Recipe files: a safe YAML loader (no tags, no object construction), strict parsing that names
the first bad field, key=value overrides, and the commented YAML that `recommend` writes.

Parsing also asks the method registry whether each target has its method's keys, so a
recipe is checked against the method it names without the schema knowing any method.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from pathlib import Path

import yaml
from pydantic import ValidationError

from .._io import write_text_atomically
from ..errors import RecipeError
from .conversions import with_training_scale
from .schema import Recipe


def _field_path(error: dict) -> str:
    return ".".join(str(part) for part in error["loc"]) or "recipe"


def parse_recipe(document, source: str = "recipe") -> Recipe:
    """A parsed YAML document -> Recipe, or a RecipeError naming the first bad field."""
    if not isinstance(document, dict):
        raise RecipeError(f"{source}: the recipe must be a YAML mapping of keys, got {type(document).__name__}")
    try:
        recipe = Recipe.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; recipes reject keys they do not know)"
        raise RecipeError(f"{source}: {_field_path(first)}: {message}") from None
    check_method(recipe, source)
    check_task(recipe, source)
    # training decides the LoRA scale: an override or a hand edit of it must not leave the peft
    # section (what TRL reads) at another one
    return recipe.model_copy(update={"peft": with_training_scale(recipe.peft, recipe.targets, recipe.training,
                                                                 recipe.method)})


def check_task(recipe: Recipe, source: str = "recipe") -> None:
    """The task is registered and the head it starts from fits it."""
    from ..tasks import get_task, task_names

    if recipe.model.task not in task_names():
        raise RecipeError(f"{source}: model.task: unknown task '{recipe.model.task}'; use one of "
                          f"{', '.join(task_names())}")
    if recipe.model.head_init == "probe" and not get_task(recipe.model.task).fits_probe_head:
        raise RecipeError(f"{source}: model.head_init: head_init probe is for task classifier; "
                          f"{recipe.model.task} starts from its own head: use head_init random")


def check_method(recipe: Recipe, source: str = "recipe") -> None:
    """The method is registered and every target has its keys (RecipeError naming the field)."""
    from ..methods import get_method, method_names

    if recipe.method not in method_names():
        raise RecipeError(f"{source}: method: unknown method '{recipe.method}'; use one of {', '.join(method_names())}")
    method = get_method(recipe.method)
    for position, target in enumerate(recipe.targets):
        try:
            method.check_target_shape(target)
        except ValueError as exc:
            raise RecipeError(f"{source}: targets.{position}: {exc}") from None
    problem = method.check_training(recipe.training)
    if problem:
        raise RecipeError(f"{source}: training.{problem}")


class _RecipeLoader(yaml.SafeLoader):
    """yaml.SafeLoader that also refuses aliases (an 11 KB alias bomb expands to gigabytes) and
    a key given twice in one mapping (safe_load keeps the last one without a word)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"YAML alias '*{event.anchor}': recipes are plain data, "
                                              "write the value out instead of referring to an anchor", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        self.flatten_mapping(node)  # merge keys (<<) first, so a merged duplicate is seen too
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                raise yaml.constructor.ConstructorError(None, None, "a mapping key must be a plain value, not a "
                                                        "list or mapping", key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key '{key}' appears twice in one mapping: "
                                                        "keep one", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(text: str):
    """Plain data only: no tags, no aliases, no duplicate keys."""
    return yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 - a SafeLoader subclass


def check_recipe_destination(path: str | Path, force: bool) -> None:
    """Before any work: an existing --out is replaced only with force, and only if it is a recipe."""
    from ..errors import OutputError

    path = Path(path)
    if path.is_dir():
        raise OutputError(f"--out {path} is a folder; give the recipe file to write, e.g. {path / 'recipe.yaml'}")
    if not path.exists():
        return
    if not force:
        raise OutputError(f"recipe file '{path}' already exists: choose another --out or pass --force")
    try:
        document = read_yaml(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, OSError):
        document = None
    if not (isinstance(document, dict) and "schema_version" in document and "targets" in document):
        raise OutputError(f"'{path}' is not a recipe, so --force will not replace it: choose another --out")


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file '{path}' not found")
    try:
        document = read_yaml(path.read_text(encoding="utf-8"))
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
            node[parts[-1]] = read_yaml(raw)
        except yaml.YAMLError:
            raise RecipeError(f"override '{item}': the value is not a YAML scalar") from None
    return parse_recipe(document, "override")


# Fields a task never reads, left out of its recipes: an SFT recipe would otherwise show a class
# count, a head and text / label columns it has none of. Reading one back fills in the defaults.
UNUSED_BY_TASK = {"sft": {"model": {"num_labels", "head_init"}, "data": {"text_column", "label_column"}}}


def recipe_to_dict(recipe: Recipe) -> dict:
    return recipe.model_dump(mode="json", by_alias=True, exclude_none=True,
                             exclude=UNUSED_BY_TASK.get(recipe.model.task))


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
