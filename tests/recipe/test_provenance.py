"""Recipes say what they were made from; a run on other model files or data says so."""

from __future__ import annotations

import logging

from helpers import tiny_recipe

from ntk_advisor.inputs.data import load_dataset
from ntk_advisor.recipe.provenance import differences, provenance
from ntk_advisor.training.loop import train


def test_provenance_records_weights_data_and_versions(tiny_model_folder, tiny_csv):
    record = provenance(str(tiny_model_folder), str(tiny_csv), load_dataset(str(tiny_csv)))
    assert set(record["model_files"]) == {"model.safetensors"} and len(record["model_files"]["model.safetensors"]) == 64
    assert record["data"]["of"] == "file" and record["data"]["examples"] == len(load_dataset(str(tiny_csv)))
    assert {"torch", "transformers", "peft"} <= set(record["written_by"])
    assert differences(record, record) == []


def test_differences_name_each_change():
    base = {"model_files": {"model.safetensors": "a" * 64}, "data": {"sha256": "b" * 64, "examples": 10},
            "written_by": {"torch": "2.13.0", "transformers": "5.0", "peft": "0.17"}}
    other = {"model_files": {"model.safetensors": "c" * 64}, "data": {"sha256": "d" * 64, "examples": 9},
             "written_by": {"torch": "2.13.0", "transformers": "5.1", "peft": "0.17"}}
    found = differences(base, other)
    assert len(found) == 3
    assert found[0].startswith("model file model.safetensors is not the one") and "aaaaaaaaaaaa" in found[0]
    assert "10 examples" in found[1] and "9 with" in found[1]
    assert found[2] == "transformers 5.1 here, 5.0 wrote the recipe"
    assert differences({}, other) == []  # a recipe from before provenance: nothing to compare


def test_train_warns_when_the_data_is_not_the_recipes(tiny_model_folder, tiny_csv, tmp_path, caplog):
    recipe = tiny_recipe(tiny_model_folder, tiny_csv, max_steps=1)
    made = provenance(str(tiny_model_folder), str(tiny_csv), load_dataset(str(tiny_csv)))
    changed = tmp_path / "data.csv"
    changed.write_text(tiny_csv.read_text() + "one more line of text,1\n")
    moved = recipe.model_copy(update={"provenance": made, "data": recipe.data.model_copy(update={"source": str(changed)})})
    with caplog.at_level(logging.WARNING, logger="ntk_advisor.recipe.provenance"):
        result = train(moved, tmp_path / "run")
    assert [r.getMessage() for r in caplog.records if "not the data the recipe was made for" in r.getMessage()]
    assert result.metrics["provenance"]["differences"] and result.metrics["provenance"]["recipe"] == made
    same = train(recipe.model_copy(update={"provenance": made}), tmp_path / "same")
    assert same.metrics["provenance"]["differences"] == []
