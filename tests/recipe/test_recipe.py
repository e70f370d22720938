"""Recipes: strict schema, safe YAML, round trips, PEFT keys, and one clear line per bad recipe."""

from __future__ import annotations

import sys

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ntk_advisor import cli
from ntk_advisor.errors import RecipeError
from ntk_advisor.recipe.conversions import peft_section
from ntk_advisor.recipe.io import dump_recipe, load_recipe, parse_recipe, recipe_to_dict, save_recipe
from ntk_advisor.recipe.schema import SCHEMA_VERSION, DataSpec, ModelSpec, Proximal, Recipe, Target, Training

Q = "bert.encoder.layer.0.attention.self.query"
V = "bert.encoder.layer.0.attention.self.value"


def good_document(method="rocoft"):
    target = {"module": Q, "axis": "rows", "indices": [0, 5]} if method == "rocoft" else {"module": Q, "rank": 4}
    return {"schema_version": SCHEMA_VERSION, "model": {"name": "minilm-l6", "num_labels": 2},
            "data": {"source": "vader-movie"}, "method": method, "targets": [target]}


def mutate(path, value):
    document = good_document("lora" if "rank" in path else "rocoft")
    node = document
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
    node[int(keys[-1]) if keys[-1].isdigit() else keys[-1]] = value
    return document


MALFORMED = [
    (mutate("schema_version", 2), r"schema_version: schema_version 2 is not supported"),
    (mutate("schema_version", "one"), r"schema_version"),
    (mutate("model.name", 5), r"model\.name"),
    (mutate("model.num_labels", 1), r"model\.num_labels"),
    (mutate("model.colour", "red"), r"model\.colour: unknown key"),
    (mutate("surprise", 1), r"surprise: unknown key"),
    (mutate("method", "dora"), r"method"),
    (mutate("targets", []), r"targets"),
    (mutate("targets.0.indices", [3, 3]), r"targets\.0: duplicate indices \[3\]"),
    (mutate("targets.0.indices", [-1]), r"targets\.0\.indices\.0"),
    (mutate("targets.0.indices", "all"), r"targets\.0\.indices"),
    (mutate("targets.0.axis", "diagonal"), r"targets\.0\.axis"),
    (mutate("targets.0.rank", 0), r"targets\.0\.rank"),
    (mutate("targets.0.rank", 2.5), r"targets\.0\.rank"),
    (mutate("training.learning_rate", 0), r"training\.learning_rate"),
    (mutate("training.learning_rate", -1e-3), r"training\.learning_rate"),
    (mutate("training.batch_size", "big"), r"training\.batch_size"),
    (mutate("training.epochs", 0), r"training\.epochs"),
    (mutate("proximal.lambda", -1), r"proximal\.lambda"),
    (mutate("proximal.mode", "sometimes"), r"proximal\.mode"),
    (mutate("data.max_length", 0), r"data\.max_length"),
    (mutate("targets.0.module", None), r"targets\.0\.module"),
]


@pytest.mark.parametrize("document,pattern", MALFORMED)
def test_malformed_documents_name_the_field(document, pattern):
    with pytest.raises(RecipeError, match=pattern):
        parse_recipe(document)


def test_structural_errors(tmp_path):
    document = good_document()
    document["targets"].append(dict(document["targets"][0]))
    with pytest.raises(RecipeError, match="targeted twice"):
        parse_recipe(document)
    both = good_document()
    both["targets"][0]["rank"] = 4
    with pytest.raises(RecipeError, match="either RoCoFT .* or LoRA"):
        parse_recipe(both)
    lora_without_rank = good_document("rocoft") | {"method": "lora"}
    with pytest.raises(RecipeError, match="method lora needs a rank"):
        parse_recipe(lora_without_rank)
    with pytest.raises(RecipeError, match="must be a YAML mapping"):
        parse_recipe(["a", "list"])


@pytest.mark.parametrize("text,pattern", [
    ("!!python/object/apply:os.system ['echo pwned']\n", r"not valid YAML.*tags are refused"),
    ("model: !!python/name:os.system\n", r"not valid YAML"),
    ("- just\n- a list\n", r"must be a YAML mapping"),
    ("key: [unclosed\n", r"not valid YAML at line"),
    ("", r"must be a YAML mapping"),
])
def test_unsafe_or_broken_yaml_files(tmp_path, text, pattern, capsys):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=pattern):
        load_recipe(path)
    assert "pwned" not in capsys.readouterr().out


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "nope.yaml")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(RecipeError, match="UTF-8|YAML"):
        load_recipe(tmp_path / "bin.yaml")


recipes = st.builds(
    Recipe,
    schema_version=st.just(SCHEMA_VERSION),
    model=st.builds(ModelSpec, name=st.sampled_from(["minilm-l6", "./my model"]), num_labels=st.integers(2, 9)),
    data=st.builds(DataSpec, source=st.text(min_size=1, max_size=12), seed=st.integers(0, 99),
                   max_length=st.integers(1, 512)),
    method=st.just("rocoft"),
    targets=st.lists(st.integers(0, 5), min_size=1, max_size=4, unique=True).flatmap(
        lambda layers: st.tuples(*[st.builds(
            Target, module=st.just(f"bert.encoder.layer.{i}.attention.self.query"), axis=st.sampled_from(["rows", "cols"]),
            indices=st.lists(st.integers(0, 383), min_size=1, max_size=6, unique=True).map(tuple),
            score=st.one_of(st.none(), st.floats(-1, 1).map(lambda f: float(f"{f:.6g}")))) for i in layers])),
    proximal=st.builds(Proximal, strength=st.floats(0, 10).map(lambda f: float(f"{f:.6g}")),
                       mode=st.sampled_from(["plain", "selective"])),
    training=st.builds(Training, learning_rate=st.floats(1e-6, 1).map(lambda f: float(f"{f:.6g}")),
                       epochs=st.integers(1, 9)),
    evidence=st.just({"budget": 123, "predicted": {"loo_accuracy": 0.75}}),
)


@settings(max_examples=40, deadline=None)
@given(recipe=recipes)
@example(recipe=Recipe(schema_version=SCHEMA_VERSION, model=ModelSpec(name="minilm-l6"),
                       data=DataSpec(source="a\x85b\u2028c"), method="rocoft",
                       targets=(Target(module="m", axis="rows", indices=(0,)),)))  # YAML line-break characters
def test_round_trip(recipe, tmp_path_factory):
    path = tmp_path_factory.mktemp("r") / "recipe.yaml"
    save_recipe(recipe, path)
    assert load_recipe(path) == recipe
    text = path.read_text()
    assert text.startswith("# ntk-advisor recipe") and "# Run it with: ntk-advisor train" in text


def test_peft_section_is_accepted_by_peft():
    from peft import LoraConfig

    section = peft_section((Target(module=Q, rank=8), Target(module=V, rank=2)), 8, None, 0.1)
    config = LoraConfig(**section)
    assert config.rank_pattern == {"^bert\\.encoder\\.layer\\.0\\.attention\\.self\\.value": 2}
    assert set(config.target_modules) == {Q, V}


def run_check(path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["ntk-advisor", "check", str(path)])
    monkeypatch.setitem(cli._state, "verbose", False)
    with pytest.raises(SystemExit) as exc:
        cli.main()
    return exc.value.code, capsys.readouterr().err


@pytest.mark.parametrize("document,pattern", MALFORMED[:6])
def test_cli_check_reports_one_line(document, pattern, tmp_path, capsys, monkeypatch):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(document))
    code, err = run_check(path, capsys, monkeypatch)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.parametrize("mutation,pattern", [
    (("targets.0.module", "bert.encoder.layer.9.attention.self.query"), r"not a Linear module of minilm-l6"),
    (("targets.0.indices", [0, 384]), r"index 384 is out of range for rows"),
])
def test_check_against_the_real_model(mutation, pattern, tmp_path, capsys, monkeypatch):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(mutate(*mutation)))
    code, err = run_check(path, capsys, monkeypatch)
    assert code == 1 and __import__("re").search(pattern, err), err
    good = tmp_path / "good.yaml"
    good.write_text(dump_recipe(parse_recipe(good_document())))
    monkeypatch.setattr(sys, "argv", ["ntk-advisor", "check", str(good), "--json"])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code in (0, None)
    assert '"weights": 768' in capsys.readouterr().out  # two rows of a 384-wide query


def test_recipe_to_dict_uses_the_lambda_key():
    recipe = parse_recipe(good_document() | {"proximal": {"lambda": 0.5}})
    assert recipe_to_dict(recipe)["proximal"] == {"lambda": 0.5, "mode": "selective"}
