"""More of issue 20's bad inputs: each gets one line that says what was wrong and what to do,
a non-zero exit, and no file written or replaced."""

from __future__ import annotations

import pytest
import yaml
from helpers import assert_one_line_error, run_cli, tiny_recipe, write

from ntk_advisor.errors import RecipeError
from ntk_advisor.recipe.io import dump_recipe, load_recipe, read_yaml


def test_alias_bomb_is_refused_fast(tmp_path):
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"] + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]"
                                                         for i in range(1, 9)]
    path = write(tmp_path / "bomb.yaml", "evidence:\n" + "\n".join("  " + line for line in levels) + "\n")
    with pytest.raises(RecipeError, match=r"at line 3: YAML alias '\*a0': recipes are plain data"):
        load_recipe(path)


def test_a_key_given_twice_is_refused(tiny_model_folder, tiny_csv, tmp_path):
    text = dump_recipe(tiny_recipe(tiny_model_folder, tiny_csv))
    twice = text.replace("  learning_rate: 0.05\n", "  learning_rate: 0.05\n  learning_rate: 0.5\n")
    assert twice != text
    with pytest.raises(RecipeError, match="at line [0-9]+: key 'learning_rate' appears twice in one mapping: keep one"):
        load_recipe(write(tmp_path / "r.yaml", twice))
    assert read_yaml("a: {b: 1}\nc: [1, 2]\n") == {"a": {"b": 1}, "c": [1, 2]}  # plain data still reads
    with pytest.raises(RecipeError, match="at line 1: a mapping key must be a plain value"):
        load_recipe(write(tmp_path / "k.yaml", "? [a]\n: 1\n"))


@pytest.mark.parametrize("key, value", [("learning_rate", ".inf"), ("learning_rate", ".nan")])
def test_infinite_or_nan_settings_are_refused(tiny_model_folder, tiny_csv, tmp_path, key, value):
    text = dump_recipe(tiny_recipe(tiny_model_folder, tiny_csv)).replace(f"  {key}: 0.05\n", f"  {key}: {value}\n")
    with pytest.raises(RecipeError, match=r"training.learning_rate.*finite"):
        load_recipe(write(tmp_path / "r.yaml", text))


def test_infinite_proximal_is_refused(tiny_model_folder, tiny_csv, tmp_path):
    document = yaml.safe_load(dump_recipe(tiny_recipe(tiny_model_folder, tiny_csv)))
    document["proximal"] = {"lambda": float("inf"), "mode": "plain"}
    with pytest.raises(RecipeError, match=r"proximal.lambda.*finite"):
        load_recipe(write(tmp_path / "r.yaml", yaml.safe_dump(document)))


@pytest.mark.parametrize("extra, pattern", [
    (["--seed", "-1"], r"--seed must be 0 or more, got -1"),
    (["--max-length", "100"], r"max length 100 is more than the 64 positions .*: use 64 or less \(--max-length, or data.max_length"),
])
def test_profile_values_out_of_range(tiny_model_folder, tiny_csv, tmp_path, capsys, monkeypatch, extra, pattern):
    args = ["profile", "--model", str(tiny_model_folder), "--data", str(tiny_csv), "--samples", "8",
            "--out", str(tmp_path / "p")] + (extra if "--max-length" in extra else ["--max-length", "8"] + extra)
    code, _, err = run_cli(args, capsys, monkeypatch)
    assert_one_line_error(code, err, pattern)
    assert not (tmp_path / "p").exists()


def test_recommend_never_overwrites_a_file_silently(tiny_model_folder, tiny_csv, tmp_path, capsys, monkeypatch):
    profile = ["profile", "--model", str(tiny_model_folder), "--data", str(tiny_csv), "--samples", "8",
               "--max-length", "8", "--out", str(tmp_path / "p")]
    assert run_cli(profile, capsys, monkeypatch)[0] == 0
    notes = tmp_path / "notes.yaml"
    notes.write_text("my: notes\n")
    base = ["recommend", str(tmp_path / "p"), "--budget", "400", "--out"]
    for force in ([], ["--force"]):
        code, _, err = run_cli(base + [str(notes)] + force, capsys, monkeypatch)
        assert_one_line_error(code, err, "already exists: choose another --out or pass --force" if not force
                              else "is not a recipe, so --force will not replace it")
        assert notes.read_text() == "my: notes\n"
    recipe = tmp_path / "r.yaml"
    assert run_cli(base + [str(recipe)], capsys, monkeypatch)[0] == 0
    code, _, err = run_cli(base + [str(recipe)], capsys, monkeypatch)
    assert_one_line_error(code, err, "already exists")
    code, out, _ = run_cli(base + [str(recipe), "--force"], capsys, monkeypatch)
    assert code == 0 and load_recipe(recipe).evidence["budget"] == 400
    sentence = load_recipe(recipe).evidence["uncertainty"]["sentence"]
    assert " ".join(sentence.split()) in " ".join(out.split())  # the uncertainty is printed with the summary
    code, _, err = run_cli(base + [str(tmp_path)], capsys, monkeypatch)
    assert_one_line_error(code, err, "is a folder; give the recipe file to write")


@pytest.mark.parametrize("args, pattern", [
    (["profile", "--samples", "abc"], r"Invalid value for '--samples'.*an integer \(see ntk-advisor profile --help\)"),
    (["profile", "--bogus"], r"No such option: --bogus.*\(see ntk-advisor profile --help\)"),
    (["nosuch"], r"No such command 'nosuch'.*\(see ntk-advisor --help\)"),
    (["recommend"], r"Missing argument 'profile_dir'.*\(see ntk-advisor recommend --help\)"),
])
def test_usage_errors_are_one_line_and_exit_1(args, pattern, capsys, monkeypatch):
    code, out, err = run_cli(args, capsys, monkeypatch)
    assert_one_line_error(code, err, pattern)
    assert "╭" not in err and "Usage:" not in err  # not click's box


def test_ctrl_c_says_what_was_kept(capsys, monkeypatch):
    class Interrupting(dict):  # Ctrl-C while the command reads the builtin list, however it reads it
        def items(self, *_):
            raise KeyboardInterrupt

        __or__ = keys = __iter__ = items

    monkeypatch.setattr("ntk_advisor.inputs.data.BUILTIN_DATASETS", Interrupting())
    code, _, err = run_cli(["data", "list"], capsys, monkeypatch)
    assert code == 130 and "interrupted; finished outputs were kept" in err and "Traceback" not in err


def test_export_names_the_classes_even_for_an_older_run(tiny_model_folder, tiny_csv, tmp_path):
    """The HF export's id2label carries the class names (from metrics.json, or from the data
    for a run written before they were recorded), so pipeline() does not answer LABEL_0."""
    import json

    from transformers import AutoConfig

    from ntk_advisor.exporting.export import export
    from ntk_advisor.training.loop import train

    named = tmp_path / "data.csv"
    named.write_text("text,label\n" + "".join(f"{line.rsplit(',', 1)[0]},{'good' if line.endswith('1') else 'bad'}\n"
                                              for line in tiny_csv.read_text().splitlines()[1:]))
    run = tmp_path / "run"
    train(tiny_recipe(tiny_model_folder, named, max_steps=1), run)
    assert json.loads((run / "metrics.json").read_text())["label_names"] == ["bad", "good"]
    export(run, "hf", tmp_path / "hf")
    assert AutoConfig.from_pretrained(tmp_path / "hf").id2label == {0: "bad", 1: "good"}
    metrics = json.loads((run / "metrics.json").read_text())
    del metrics["label_names"]
    (run / "metrics.json").write_text(json.dumps(metrics))
    export(run, "hf", tmp_path / "hf-old")
    assert AutoConfig.from_pretrained(tmp_path / "hf-old").id2label == {0: "bad", 1: "good"}


@pytest.mark.parametrize("change, pattern", [
    ({"indices": (0, 3, 999)}, r"targets.0.indices: index 999 is out of range for rows of "
                                    r"'bert.encoder.layer.1.output.dense' \(16 rows\); fix the recipe"),
    ({"module": "bert.encoder.layer.7.output.dense"}, r"targets.0.module: .* is not a Linear module"),
])
def test_train_checks_targets_as_check_does(tiny_model_folder, tiny_csv, tmp_path, change, pattern):
    from ntk_advisor.errors import TrainError
    from ntk_advisor.training.loop import train

    recipe = tiny_recipe(tiny_model_folder, tiny_csv, max_steps=1)
    recipe = recipe.model_copy(update={"targets": (recipe.targets[0].model_copy(update=change),) + recipe.targets[1:]})
    with pytest.raises(TrainError, match=pattern):
        train(recipe, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()  # a failed start leaves nothing to refuse a retry


def test_resume_with_another_recipe_is_refused(tiny_model_folder, tiny_csv, tmp_path):
    from ntk_advisor.errors import TrainError
    from ntk_advisor.recipe.io import apply_overrides
    from ntk_advisor.training.loop import train

    recipe = tiny_recipe(tiny_model_folder, tiny_csv, max_steps=8, checkpoint_every=3)

    def stop(stage, done, total, metrics):
        if stage == "train" and done == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(recipe, tmp_path / "run", on_progress=stop)
    faster = apply_overrides(recipe, ["training.learning_rate=0.5"])
    with pytest.raises(TrainError, match=r"started from another recipe \(training.learning_rate differs\): resume "
                                         "with the recipe it was started with, or start over with --force"):
        train(faster, tmp_path / "run", resume=True)
    assert train(recipe, tmp_path / "run", resume=True).metrics["steps"] == 8  # the right recipe still resumes


# ----------------------------------------------------------------------------- data files
@pytest.mark.parametrize("content, columns, pattern", [
    ("text,text,label\na,b,1\nc,d,0\n", {}, r"the header names column 'text' twice; rename one of them"),
    ("text,label\na,1\nb,0\n", {"label_column": "text"}, r"'text' is given as both the text and the label column"),
    ("text,label\na,0.5\nb,1\n", {}, r"line 2 has label '0.5' in 'label', which is not a class"),
    ("text,label\n" + "".join(f"row {i},{i % 2}\n" for i in range(4)) + '"unclosed quote,1\n'
     + "".join(f"row {i},{i % 2}\n" for i in range(50)),
     {}, r"line 6 opens a quote that is never closed \(the record runs to line 56\); close the quote"),
])
def test_data_file_mistakes(tmp_path, content, columns, pattern):
    from ntk_advisor.errors import DataError
    from ntk_advisor.inputs.data import load_dataset

    path = write(tmp_path / "data.csv", content)
    with pytest.raises(DataError, match=pattern):
        load_dataset(path, **columns)


# ----------------------------------------------------------------------------- profiles and checks
@pytest.fixture
def tiny_profile(tiny_model_folder, tiny_csv, tmp_path, capsys, monkeypatch):
    args = ["profile", "--model", str(tiny_model_folder), "--data", str(tiny_csv), "--samples", "8",
            "--max-length", "8", "--out", str(tmp_path / "p")]
    assert run_cli(args, capsys, monkeypatch)[0] == 0
    return tmp_path / "p"


def test_torn_or_incomplete_profiles_are_one_line(tiny_profile, tmp_path, capsys, monkeypatch):
    import json
    import shutil

    torn = tmp_path / "torn"
    shutil.copytree(tiny_profile, torn)
    data = (torn / "kernels.safetensors").read_bytes()
    (torn / "kernels.safetensors").write_bytes(data[: len(data) // 2])
    code, _, err = run_cli(["recommend", str(torn), "--out", str(tmp_path / "r.yaml")], capsys, monkeypatch)
    assert_one_line_error(code, err, r"profile folder .*torn' is corrupt .*recompute it with ntk-advisor profile")
    partial = tmp_path / "partial"
    shutil.copytree(tiny_profile, partial)
    document = json.loads((partial / "profile.json").read_text())
    del document["modules"]
    (partial / "profile.json").write_text(json.dumps(document))
    code, _, err = run_cli(["recommend", str(partial), "--out", str(tmp_path / "r.yaml")], capsys, monkeypatch)
    assert_one_line_error(code, err, r"is incomplete \(profile.json lacks 'modules'\)")
    assert not (tmp_path / "r.yaml").exists()


def test_a_budget_beyond_what_the_placement_can_use_is_said(tiny_profile, tmp_path, caplog):
    import logging

    from ntk_advisor.advice.recommend import RecommendConfig, recommend

    with caplog.at_level(logging.WARNING, logger="ntk_advisor.advice.recommend"):
        recipe = recommend(tiny_profile, RecommendConfig(budget=10 ** 12))
    assert any("is more than this placement can use" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ntk_advisor.advice.recommend"):
        recommend(tiny_profile, RecommendConfig(budget=recipe.evidence["trainable"]["total"]))
    assert not caplog.records  # a budget the placement fills: no warning


def test_check_names_a_data_file_that_is_not_there(tiny_model_folder, tiny_csv, tmp_path, capsys, monkeypatch):
    from ntk_advisor.recipe.io import save_recipe

    recipe = tiny_recipe(tiny_model_folder, tmp_path / "moved.csv")
    save_recipe(recipe, tmp_path / "r.yaml")
    code, _, err = run_cli(["check", str(tmp_path / "r.yaml")], capsys, monkeypatch)
    assert_one_line_error(code, err, r"data.source: '.*moved.csv' does not exist here; point it at the data file")


def test_csv_records_after_blank_lines_keep_their_line_numbers(tmp_path):
    from ntk_advisor.errors import DataError
    from ntk_advisor.inputs.data import load_dataset

    path = write(tmp_path / "d.csv", 'text,label\na,1\n\nb,0\n"two\nlines",1\n\nshort\n')
    with pytest.raises(DataError, match="line 8 has no label in column 'label'"):  # not a false "unclosed quote"
        load_dataset(path)
    ok = load_dataset(write(tmp_path / "ok.csv", 'text,label\na,1\n\nb,0\n"two\nlines",1\n'))
    assert ok.texts == ("a", "b", "two\nlines")


@pytest.mark.parametrize("samples, pattern", [("192", r"and 0 training texts are left: use a smaller --samples"),
                                              ("240", r"larger than the 192 examples")])
def test_a_probe_set_that_takes_the_whole_training_split(tiny_model_folder, tiny_csv, tmp_path, capsys, monkeypatch,
                                                        samples, pattern):
    """The probe head is fit on training texts outside the probe set; at --samples = the
    training split (the largest the size check allows) none are left."""
    code, _, err = run_cli(["profile", "--model", str(tiny_model_folder), "--data", str(tiny_csv), "--samples",
                            samples, "--max-length", "8", "--out", str(tmp_path / "p")], capsys, monkeypatch)
    assert_one_line_error(code, err, pattern)
    assert not (tmp_path / "p").exists()


def test_a_data_file_of_duplicates(tiny_model_folder, tmp_path, capsys, monkeypatch):
    data = write(tmp_path / "dup.csv", "text,label\n" + "".join(f"the same words,{i % 2}\n" for i in range(60)))
    code, _, err = run_cli(["profile", "--model", str(tiny_model_folder), "--data", data, "--samples", "8",
                            "--max-length", "8", "--out", str(tmp_path / "p")], capsys, monkeypatch)
    assert_one_line_error(code, err, r"holds only 1 distinct texts\): use a smaller --samples, more data")
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("stage", ["profile", "recommend", "train", "export"])
def test_an_out_path_under_a_file(tiny_model_folder, tiny_csv, tiny_profile, tmp_path, capsys, monkeypatch, stage):
    from ntk_advisor.recipe.io import save_recipe

    blocker = tmp_path / "afile"
    blocker.write_text("mine")
    recipe = tmp_path / "recipe.yaml"
    save_recipe(tiny_recipe(tiny_model_folder, tiny_csv, max_steps=1), recipe)
    run = tmp_path / "run"
    if stage == "export":
        assert run_cli(["train", str(recipe), "--out", str(run)], capsys, monkeypatch)[0] == 0
    args = {"profile": ["profile", "--model", str(tiny_model_folder), "--data", str(tiny_csv), "--samples", "8",
                        "--max-length", "8"],
            "recommend": ["recommend", str(tiny_profile), "--budget", "300"],
            "train": ["train", str(recipe)], "export": ["export", str(run)]}[stage]
    for out in (blocker / "sub", blocker):
        for force in ([], ["--force"]):
            if stage == "recommend" and out == blocker:
                continue  # a file as --out is recommend's normal case, refused without --force
            code, _, err = run_cli(args + ["--out", str(out)] + force, capsys, monkeypatch)
            assert_one_line_error(code, err, r"is a file|already exists|folder path is a file|Not a directory")
            assert blocker.read_text() == "mine"
