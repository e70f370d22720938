"""The command line: bad input gets one clear line, a non-zero exit and no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import assert_one_line_error, run_cli, write

from ntk_advisor import cli


@pytest.fixture
def csv_file(tmp_path):
    rows = ["text,label"] + [f"example number {i} is {'good' if i % 2 else 'bad'},{i % 2}" for i in range(40)]
    return write(tmp_path / "reviews.csv", "\n".join(rows) + "\n")


def test_version_and_help(capsys, monkeypatch):
    code, out, _ = run_cli(["--version"], capsys, monkeypatch)
    assert code == 0 and out.strip() == "ntk-advisor 0.1.0"
    code, out, _ = run_cli(["profile", "--help"], capsys, monkeypatch)
    assert code == 0 and "--samples" in out and "--head" in out and "linear probe" in out


@pytest.mark.parametrize("args,pattern", [
    (["profile", "--model", "nonsense", "--data", "{csv}", "-n", "8", "--out", "{out}"], r"unknown model 'nonsense'"),
    (["profile", "--model", "no-such-org/no-model", "--data", "{csv}", "-n", "8", "--out", "{out}"],
     r"could not load model 'no-such-org/no-model'.*local folder"),
    (["profile", "--model", "{tmp}", "--data", "{csv}", "-n", "8", "--out", "{out}"], r"not a Hugging Face model folder"),
    (["profile", "--data", "{tmp}/missing.csv", "--out", "{out}"], r"missing\.csv"),
    (["profile", "--data", "{csv}", "--samples", "1", "--out", "{out}"], r"at least 2"),
    (["profile", "--data", "{csv}", "--samples", "500", "--out", "{out}"], r"500"),
    (["profile", "--data", "{csv}", "--max-length", "0", "--out", "{out}"], r"max-length must be at least 1"),
    (["profile", "--data", "{csv}", "--text-column", "review", "--out", "{out}"], r"review"),
    (["profile", "--data", "{csv}", "--head", "magic", "--out", "{out}"], r"unknown --head 'magic'"),
    (["data", "show", "{tmp}/empty.csv"], r"empty|no rows|no data"),
    (["data", "show", "{tmp}/latin1.csv"], r"UTF-8"),
    (["data", "show", "{tmp}/one_class.csv"], r"at least 2 classes|single|one class"),
    (["profile", "--data", "{csv}", "--out", "{tmp}"], r"already exists.*--force"),
])
def test_bad_input_gets_one_line(args, pattern, tmp_path, csv_file, capsys, monkeypatch):
    write(tmp_path / "empty.csv", "")
    write(tmp_path / "latin1.csv", "text,label\ncaf\u00e9 au lait,1\nthé,0\n", encoding="latin-1")
    write(tmp_path / "one_class.csv", "text,label\n" + "".join(f"row {i},pos\n" for i in range(10)))
    args = [a.format(csv=csv_file, tmp=tmp_path, out=tmp_path / "out") for a in args]
    code, _, err = run_cli(args, capsys, monkeypatch)
    assert_one_line_error(code, err, pattern)
    if "--out" in args and args[args.index("--out") + 1] != str(tmp_path):
        assert not (tmp_path / "out").exists()  # nothing half-written


def test_verbose_shows_the_traceback(capsys, monkeypatch, csv_file):
    monkeypatch.setattr(sys, "argv", ["ntk-advisor", "--verbose", "profile", "--model", "nonsense", "--data", csv_file,
                                      "--out", "x"])
    with pytest.raises(Exception, match="unknown model"):
        cli.main()


def test_data_show_json(csv_file, capsys, monkeypatch):
    code, out, _ = run_cli(["data", "show", csv_file, "--json"], capsys, monkeypatch)
    info = json.loads(out)
    assert code == 0 and info["examples"] == 40 and sum(info["label_counts"].values()) == 40
    assert sum(info["splits"].values()) == 40


def test_console_script_is_installed():
    done = subprocess.run([sys.executable, "-m", "ntk_advisor.cli", "models", "list", "--json"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "minilm-l6" in json.loads(done.stdout)


@pytest.mark.slow
def test_real_profile_cli_end_to_end(tmp_path, capsys, monkeypatch):
    out = tmp_path / "prof"
    code, stdout, err = run_cli(["profile", "--model", "minilm-l6", "--data", "vader-movie", "--samples", "8",
                                 "--max-length", "16", "--head", "random", "--json", "--out", str(out)],
                                capsys, monkeypatch)
    assert code == 0, err
    summary = json.loads(stdout)
    assert len(summary["modules"]) == 38 and summary["settings"]["samples"] == 8
    assert (out / "profile.json").exists() and (out / "kernels.safetensors").exists()
    code, stdout, _ = run_cli(["models", "show", "minilm-l6", "--json"], capsys, monkeypatch)
    assert code == 0 and len(json.loads(stdout)["targets"]) == 38


@pytest.mark.parametrize("args,pattern", [
    (["recommend", "{tmp}", "--out", "{tmp}/r.yaml"], r"is not a profile folder"),
    (["recommend", "{tmp}", "--budget", "-3"], r"--budget must be a positive"),
    (["recommend", "{tmp}", "--objective", "vibes"], r"unknown --objective 'vibes'"),
    (["recommend", "{tmp}", "--capture-mib", "-1"], r"--capture-mib must be 0 \(from the free memory\) or more"),
    (["recommend", "{tmp}", "--capture-mib", "nan"], r"--capture-mib must be 0 \(from the free memory\) or more"),
    (["train", "{tmp}/missing.yaml"], r"recipe file .* not found"),
    (["train", "{tmp}/bad.yaml"], r"targets: .*"),
    (["check", "{tmp}/bad.yaml"], r"targets"),
    (["export", "{tmp}", "--out", "{tmp}/e"], r"not a finished run folder"),
    (["recipe", "convert", "{tmp}/bad.yaml", "--to", "xml"], r"targets"),
    (["validate", "--out", "{tmp}/v", "--placements", "2"], r"--placements must be at least 3"),
    (["validate", "--out", "{tmp}/v", "--lambdas", "0,small"], r"--lambdas takes numbers"),
    (["validate", "--out", "{tmp}/v", "--method", "svd"], r"unknown --method 'svd'"),
    (["validate", "--out", "{tmp}/v", "--data", "{tmp}/six.csv"], r"too few"),
    (["report", "{tmp}", "--out", "{tmp}/e/r.html"], r"not a profile, validate or run folder"),
])
def test_later_stages_bad_input_one_line(args, pattern, tmp_path, capsys, monkeypatch):
    (tmp_path / "bad.yaml").write_text("schema_version: 1\nmodel: {name: minilm-l6}\ndata: {source: x}\n"
                                       "method: rocoft\ntargets: []\n")
    (tmp_path / "six.csv").write_text("text,label\n" + "".join(f"row {i},{i % 2}\n" for i in range(6)))
    code, _, err = run_cli([a.format(tmp=tmp_path) for a in args], capsys, monkeypatch)
    assert_one_line_error(code, err, pattern)
    assert not (tmp_path / "e").exists() and not (tmp_path / "r.yaml").exists() and not (tmp_path / "v").exists()


def test_validate_and_report_commands_on_a_tiny_model(tiny_model_folder, tiny_csv, tmp_path, capsys, monkeypatch):
    study = tmp_path / "study"
    args = ["validate", "--model", str(tiny_model_folder), "--data", str(tiny_csv), "--budget", "400", "-k", "3",
            "--key-seeds", "1", "--steps", "2", "--samples", "8", "--max-length", "16", "--out", str(study)]
    code, out, err = run_cli(args, capsys, monkeypatch)
    assert code == 0, err
    assert "placements ranked by test accuracy on the seeds all ran (seed-0)" in out and "Spearman" in out
    code, out, err = run_cli(["report", str(study), "--out", str(tmp_path / "r.html")], capsys, monkeypatch)
    assert code == 0 and "validate folder" in out and (tmp_path / "r.html").stat().st_size > 10_000
    changed = [a if a != "400" else "500" for a in args]  # same folder, another budget: refused
    code, _, err = run_cli(changed, capsys, monkeypatch)
    assert_one_line_error(code, err, r"other settings \(budget\)")


def test_validate_named_arms_print_paired_differences(tiny_model_folder, tiny_csv, tmp_path, capsys, monkeypatch):
    args = ["validate", "--model", str(tiny_model_folder), "--data", str(tiny_csv), "--budget", "400", "--arms",
            "advised,first-k,random", "--seeds", "2", "--steps", "2", "--samples", "8", "--max-length", "16",
            "--out", str(tmp_path / "study")]
    code, out, err = run_cli(args, capsys, monkeypatch)
    assert code == 0, err
    assert "advised − first-k:" in out and "paired over 2 shared training seeds" in out
    code, _, err = run_cli(args[:-1] + [str(tmp_path / "other")] + ["--arms", "advised,best"], capsys, monkeypatch)
    assert_one_line_error(code, err, "unknown arm 'best'")
    assert not (tmp_path / "other").exists()


def test_cli_defaults_are_the_config_classes():
    """Every option that names a config field defaults to that field: one place for defaults."""
    import dataclasses
    import inspect

    from ntk_advisor.advice.config import RecommendConfig
    from ntk_advisor.cli import profile, recommend, validate
    from ntk_advisor.profiling.config import ProfileConfig
    from ntk_advisor.study.config import ValidateConfig

    checked = 0
    for command, configs in ((profile.profile, [ProfileConfig]), (recommend.recommend, [RecommendConfig]),
                             (recommend.advise, [RecommendConfig, ProfileConfig]),
                             (validate.validate, [ValidateConfig])):
        for name, parameter in inspect.signature(command).parameters.items():
            for config in configs:
                fields = {f.name: f for f in dataclasses.fields(config)}
                name_in_config = {"output": "reduction"}.get(name, name)
                if name_in_config in fields and fields[name_in_config].default is not dataclasses.MISSING:
                    expected = fields[name_in_config].default
                    if parameter.default is None and expected == ():  # a list option left out: empty
                        break
                    if (command.__name__, name) == ("validate", "epochs"):  # None: train --steps instead
                        break
                    assert parameter.default == expected, (command.__name__, name)
                    checked += 1
                    break
    assert checked >= 40


def test_the_cli_starts_without_torch():
    """`ntk-advisor --help` must stay instant: the CLI and the config classes import no torch."""
    done = subprocess.run([sys.executable, "-c", "import sys, ntk_advisor.cli; print('torch' in sys.modules)"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr[-500:]