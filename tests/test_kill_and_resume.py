"""kill -9, not a polite exception: a real SIGKILL at a random point of train, validate and
profile, then the same command again. Train resumes to bit-identical weights, validate to the
same study, and profile leaves nothing a later command would take for a finished profile."""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from helpers import tiny_config, tiny_recipe
from safetensors.torch import load_file

from ntk_advisor.profiling.folder import load_profile
from ntk_advisor.recipe.io import save_recipe
from ntk_advisor.study.validate import validate
from ntk_advisor.training.loop import train


def _kill_when(command: list[str], ready, timeout: float = 300) -> subprocess.Popen:
    """Start ``command``; SIGKILL it at the first stderr line for which ready(line) is true
    (and after ``timeout`` seconds whatever happens, so a hang fails instead of blocking)."""
    import threading

    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(timeout, process.kill)
    watchdog.start()
    reached = False
    try:
        for line in process.stderr:
            if ready(line):
                reached = True
                process.send_signal(signal.SIGKILL)
                break
        process.wait(timeout=60)
    finally:
        watchdog.cancel()
    assert reached, "the command never reached the point to kill it at"
    assert process.returncode == -signal.SIGKILL, "the command ended before it was killed"
    return process


def test_train_killed_at_a_random_step_resumes_bit_identically(tiny_model_folder, tiny_csv, tmp_path):
    recipe = tiny_recipe(tiny_model_folder, tiny_csv, epochs=2)  # 24 steps, a checkpoint every 5
    save_recipe(recipe, tmp_path / "recipe.yaml")
    seed = random.SystemRandom().randrange(2**32)
    step = random.Random(seed).randint(6, 16)  # after the first checkpoint, well before the end (logs every 2 steps)
    print(f"killing at step {step} (seed {seed})")

    def reached(line):
        found = re.match(r"train: step (\d+)/", line)
        return found is not None and int(found.group(1)) >= step

    _kill_when([sys.executable, "-m", "ntk_advisor.cli", "train", str(tmp_path / "recipe.yaml"), "--out",
                str(tmp_path / "cut")], reached)
    assert not (tmp_path / "cut" / "metrics.json").exists()
    resumed = train(recipe, tmp_path / "cut", resume=True)
    whole = train(recipe, tmp_path / "whole")
    a = load_file(str(tmp_path / "whole" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"killed at step {step} (seed {seed})"
    assert resumed.metrics["loss_curve"] == whole.metrics["loss_curve"]


def test_validate_killed_mid_study_resumes_to_the_same_study(tiny_model_folder, tiny_csv, tmp_path):
    settings = dict(model=str(tiny_model_folder), data=str(tiny_csv), placements=3, key_seeds=1)
    script = ("import sys\nfrom helpers import tiny_config\nfrom ntk_advisor.study.validate import validate\n"
              f"validate(tiny_config(**{settings!r}), {str(tmp_path / 'cut')!r}, "
              "on_progress=lambda stage, done, total, *a: print(stage, done, total, file=sys.stderr, flush=True))")
    tests = str(Path(__file__).resolve().parent)
    finished = []

    def second_run_started(line):  # a finished run on disk, and the next one under way
        finished[:] = sorted((tmp_path / "cut").glob("runs/*/*/metrics.json"))
        return len(finished) >= 1 and line.startswith("current run")

    _kill_when([sys.executable, "-c", f"import sys; sys.path.insert(0, {tests!r})\n" + script], second_run_started)
    assert not (tmp_path / "cut" / "validate.json").exists()
    kept = {p: p.stat().st_mtime_ns for p in finished}
    resumed = validate(tiny_config(**settings), tmp_path / "cut")
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # finished runs were read back, not redone
    whole = validate(tiny_config(**settings), tmp_path / "whole")
    for name, placement in whole["placements"].items():
        assert resumed["placements"][name]["test_accuracy"] == placement["test_accuracy"], name
    assert resumed["ranking"] == whole["ranking"]


def test_profile_killed_mid_run_leaves_no_profile(tiny_model_folder, tiny_csv, tmp_path):
    out = tmp_path / "prof"
    command = [sys.executable, "-m", "ntk_advisor.cli", "profile", "--model", str(tiny_model_folder), "--data",
               str(tiny_csv), "--samples", "8", "--max-length", "8", "--out", str(out)]
    _kill_when(command, lambda line: line.startswith("label gradient"))  # the last stage before the folder is written
    assert not out.exists()  # at most a hidden .prof.tmp-* folder, which no command reads as a profile
    subprocess.run(command, check=True, capture_output=True, timeout=300)  # not refused as "already exists"
    assert load_profile(out).settings["samples"] == 8
    assert json.loads((out / "profile.json").read_text())["settings"]["max_length"] == 8
