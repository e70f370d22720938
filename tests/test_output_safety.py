"""The three defects that lost users' work or ran a stranger's code (issue 20's first three):
a user's folder replaced by `advise --profile-out`, the working folder deleted by
`train --out . --force`, and code run from a crafted checkpoint on `--resume`."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from helpers import assert_one_line_error, run_cli, tiny_recipe

from ntk_advisor.errors import OutputError, TrainError
from ntk_advisor.recipe.io import save_recipe
from ntk_advisor.training.loop import train


def _user_folder(path: Path) -> Path:
    path.mkdir()
    (path / "notes.txt").write_text("my notes")
    (path / "data").mkdir()
    (path / "data" / "keep.csv").write_text("text,label\n")
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("force", [False, True])
def test_advise_never_replaces_a_users_folder(tiny_model_folder, tiny_csv, tmp_path, capsys, monkeypatch, force):
    keep = _user_folder(tmp_path / "keep")
    before = _snapshot(keep)
    args = ["advise", "--model", str(tiny_model_folder), "--data", str(tiny_csv), "--samples", "8",
            "--max-length", "8", "--profile-out", str(keep), "--out", str(tmp_path / "r.yaml")]
    code, _, err = run_cli(args + (["--force"] if force else []), capsys, monkeypatch)
    assert_one_line_error(code, err, r"already exists.*--force" if not force else r"did not write.*notes\.txt")
    assert _snapshot(keep) == before
    assert not (tmp_path / "r.yaml").exists()


def test_advise_force_replaces_its_own_profile(tiny_model_folder, tiny_csv, tmp_path, capsys, monkeypatch):
    args = ["advise", "--model", str(tiny_model_folder), "--data", str(tiny_csv), "--samples", "8", "--max-length",
            "8", "--budget", "200", "--profile-out", str(tmp_path / "prof"), "--out", str(tmp_path / "r.yaml")]
    code, _, err = run_cli(args, capsys, monkeypatch)
    assert code == 0, err
    first = (tmp_path / "prof" / "kernels.safetensors").stat().st_mtime_ns
    code, _, err = run_cli(args + ["--force"], capsys, monkeypatch)
    assert code == 0, err
    assert (tmp_path / "prof" / "kernels.safetensors").stat().st_mtime_ns != first


def test_train_force_never_deletes_the_working_folder(tiny_model_folder, tiny_csv, tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    data = work / "toy.csv"
    data.write_bytes(Path(tiny_csv).read_bytes())
    recipe = tiny_recipe(tiny_model_folder, data, max_steps=2)
    save_recipe(recipe, work / "recipe.yaml")
    before = _snapshot(work)
    monkeypatch.chdir(work)
    code, _, err = run_cli(["train", "recipe.yaml", "--out", ".", "--force"], capsys, monkeypatch)
    assert_one_line_error(code, err, r"--force would delete")
    assert _snapshot(work) == before


@pytest.mark.parametrize("inside", ["recipe", "data", "strangers"])
def test_train_force_refuses_folders_that_are_not_runs(tiny_model_folder, tiny_csv, tmp_path, inside):
    out = tmp_path / "out"
    out.mkdir()
    data = out / "toy.csv" if inside == "data" else Path(tiny_csv)
    if inside == "data":
        data.write_bytes(Path(tiny_csv).read_bytes())
    recipe = tiny_recipe(tiny_model_folder, data, max_steps=2)
    recipe_path = save_recipe(recipe, (out if inside == "recipe" else tmp_path) / "recipe.yaml")
    if inside == "strangers":
        (out / "thesis.tex").write_text("years of work")
    before = _snapshot(out)
    with pytest.raises(OutputError, match="would delete|did not write"):
        train(recipe, out, force=True, protect=(recipe_path,))
    assert _snapshot(out) == before


def test_train_force_replaces_an_earlier_run_only(tiny_model_folder, tiny_csv, tmp_path):
    recipe = tiny_recipe(tiny_model_folder, tiny_csv, max_steps=2)
    out = tmp_path / "run"
    train(recipe, out)
    assert {p.name for p in out.iterdir()} >= {"adapter", "metrics.json", "recipe.yaml", "checkpoints"}
    train(recipe, out, force=True)
    assert (out / "metrics.json").exists()


def test_a_failed_start_leaves_no_run_behind(tiny_model_folder, tiny_csv, tmp_path):
    from ntk_advisor.recipe.io import apply_overrides

    recipe = tiny_recipe(tiny_model_folder, tiny_csv, max_steps=2)
    out = tmp_path / "run"
    with pytest.raises(TrainError, match="num_labels is 3"):
        train(apply_overrides(recipe, ["model.num_labels=3"]), out)
    train(recipe, out)  # the retry is not refused as "another run"


class _RunsCode:
    """An object whose unpickling would call Path.touch: what a crafted checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_resume_never_runs_code_from_a_checkpoint(tiny_model_folder, tiny_csv, tmp_path):
    recipe = tiny_recipe(tiny_model_folder, tiny_csv, max_steps=2)
    out = tmp_path / "run"
    train(recipe, out)
    marker = tmp_path / "pwned"
    torch.save({"complete": True, "payload": _RunsCode(marker)}, out / "checkpoints" / "step-999.pt")
    with pytest.raises(TrainError, match="not a checkpoint of this tool"):
        train(recipe, out, resume=True)
    assert not marker.exists()


def test_checkpoints_load_with_weights_only(tiny_model_folder, tiny_csv, tmp_path):
    """Every checkpoint the loop writes is plain data: it loads with weights_only=True."""
    out = tmp_path / "run"
    train(tiny_recipe(tiny_model_folder, tiny_csv, max_steps=5, checkpoint_every=5), out)
    for path in (out / "checkpoints").glob("step-*.pt"):
        state = torch.load(path, weights_only=True)
        assert state["complete"] is True and state["step"] == 5


def test_no_module_loads_pickles_unsafely():
    root = Path(__file__).resolve().parents[1] / "ntk_advisor"
    offenders = [f"{p.relative_to(root)}:{i}" for p in root.rglob("*.py")
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if "torch.load(" in line and "weights_only=True" not in line]
    assert offenders == []


def test_checkpoint_folder_deleted_mid_run_is_recreated(tiny_model_folder, tiny_csv, tmp_path):
    import shutil

    out = tmp_path / "run"

    def delete_checkpoints(stage, done, total, metrics):
        if stage == "train" and done == 6:
            shutil.rmtree(out / "checkpoints")

    train(tiny_recipe(tiny_model_folder, tiny_csv, max_steps=10, checkpoint_every=5), out,
          on_progress=delete_checkpoints)
    assert (out / "metrics.json").exists() and list((out / "checkpoints").glob("step-*.pt"))
    assert os.access(out, os.W_OK)


# ----------------------------------------------------------------------------- one writer per --out
def test_a_second_command_on_a_claimed_out_stops_at_once(tiny_model_folder, tiny_csv, tmp_path, capsys,
                                                          monkeypatch):
    from ntk_advisor._io import OutputClaim

    out = tmp_path / "prof"
    args = ["profile", "--model", str(tiny_model_folder), "--data", str(tiny_csv), "--samples", "8",
            "--max-length", "8", "--out", str(out)]
    with OutputClaim(out):
        code, _, err = run_cli(args, capsys, monkeypatch)
        assert_one_line_error(code, err, rf"another ntk-advisor command \(pid {os.getpid()}\) is writing .*prof'")
        assert not out.exists()
        recipe = tiny_recipe(tiny_model_folder, tiny_csv, max_steps=1)
        with pytest.raises(OutputError, match="another ntk-advisor command"):
            train(recipe, out)
    assert run_cli(args, capsys, monkeypatch)[0] == 0  # released on exit


def test_a_claim_dies_with_its_process(tmp_path):
    """kill -9 leaves no stale claim: the kernel drops the lock with the process."""
    import signal
    import subprocess
    import sys
    import time

    from ntk_advisor._io import OutputClaim

    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom ntk_advisor._io import OutputClaim\n"
                               f"OutputClaim({str(out)!r}).__enter__(); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputError, match=rf"pid {holder.pid}\)"):
            OutputClaim(out).__enter__()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    deadline = time.monotonic() + 10
    while True:
        try:
            with OutputClaim(out):
                break
        except OutputError:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_two_profiles_racing_for_one_out(tiny_model_folder, tiny_csv, tmp_path):
    """Started together: one writes the profile, the other says why it did not; nothing is mixed."""
    import subprocess
    import sys

    out = tmp_path / "prof"
    command = [sys.executable, "-m", "ntk_advisor.cli", "profile", "--model", str(tiny_model_folder), "--data",
               str(tiny_csv), "--samples", "8", "--max-length", "8", "--out", str(out)]
    racers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(r.returncode, r.communicate(timeout=300)[1]) for r in racers]
    results = [(r.returncode, err) for r, (_, err) in zip(racers, results)]
    assert sorted(code for code, _ in results) == [0, 1], results
    loser = next(err for code, err in results if code == 1)
    assert re.search(r"error: (another ntk-advisor command \(pid \d+\) is writing|output folder .* already exists)",
                     loser), loser
    from ntk_advisor.profiling.folder import load_profile

    assert load_profile(out).settings["samples"] == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prof"]  # no temp folder of the loser left


# ----------------------------------------------------------------------------- links from strangers
def _outside(tmp_path):
    secret = tmp_path / "elsewhere"
    secret.mkdir()
    (secret / "step-999.pt").write_bytes(b"not yours")
    (secret / "id_rsa").write_text("private")
    return secret


@pytest.mark.parametrize("entry", ["checkpoints", "adapter", "metrics.json"])
def test_a_run_folder_with_a_link_is_never_followed(tiny_model_folder, tiny_csv, tmp_path, capsys, monkeypatch,
                                                   entry):
    """A shared run folder whose checkpoints/ (or adapter/, metrics.json) links elsewhere:
    train --resume, --force and export refuse it, and the linked files stay as they were."""
    secret = _outside(tmp_path)
    before = _snapshot(secret)
    recipe = tiny_recipe(tiny_model_folder, tiny_csv, max_steps=6, checkpoint_every=3)
    save_recipe(recipe, tmp_path / "recipe.yaml")
    run = tmp_path / "run"
    train(recipe, run)
    target = run / entry
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    target.symlink_to(secret / ("id_rsa" if entry == "metrics.json" else ""), target_is_directory=entry != "metrics.json")
    for args in (["train", str(tmp_path / "recipe.yaml"), "--out", str(run), "--resume"],
                 ["train", str(tmp_path / "recipe.yaml"), "--out", str(run), "--force"],
                 ["export", str(run), "--out", str(tmp_path / "exported")]):
        code, _, err = run_cli(args, capsys, monkeypatch)
        assert_one_line_error(code, err, rf"'{re.escape(str(target))}' is a symbolic link; a run folder holds only")
    assert _snapshot(secret) == before and target.is_symlink()
    assert not (tmp_path / "exported").exists()


def test_a_profile_or_study_with_a_link_is_not_read(tiny_model_folder, tiny_csv, tmp_path, capsys, monkeypatch):
    secret = _outside(tmp_path)
    prof = tmp_path / "prof"
    assert run_cli(["profile", "--model", str(tiny_model_folder), "--data", str(tiny_csv), "--samples", "8",
                    "--max-length", "8", "--out", str(prof)], capsys, monkeypatch)[0] == 0
    (prof / "head.safetensors").unlink(missing_ok=True)
    (prof / "head.safetensors").symlink_to(secret / "id_rsa")
    code, _, err = run_cli(["recommend", str(prof), "--budget", "300", "--out", str(tmp_path / "r.yaml")], capsys,
                           monkeypatch)
    assert_one_line_error(code, err, r"head.safetensors' is a symbolic link; a profile folder holds only")
    study = tmp_path / "study"
    study.mkdir()
    (study / "settings.json").symlink_to(secret / "id_rsa")
    from helpers import tiny_config

    from ntk_advisor.errors import ValidateError
    from ntk_advisor.study.validate import validate

    with pytest.raises(ValidateError, match="settings.json' is a symbolic link"):
        validate(tiny_config(tiny_model_folder, tiny_csv), study, force=True)
    assert (secret / "id_rsa").read_text() == "private"


def test_an_atomic_write_that_fails_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    """Results files (the suite's records, the recipes' evidence) are replaced whole or not at all."""
    from ntk_advisor._io import write_atomically, write_text_atomically

    target = write_text_atomically(tmp_path / "results.json", '{"runs": [1, 2]}\n')

    def dies_half_way(tmp):
        Path(tmp).write_text('{"runs": [1,')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(target, dies_half_way)
    assert target.read_text() == '{"runs": [1, 2]}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
