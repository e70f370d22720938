"""The prepared GPU check (benchmarks/gpu/check.py) runs end to end on the CPU with tiny
settings, so it still works when a GPU machine is lent."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu" / "check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


def test_check_runs_on_the_cpu_and_writes_its_tables(check, tiny_model_folder, tiny_csv, tmp_path):
    weightless = tmp_path / "config-only"
    weightless.mkdir()
    for item in Path(tiny_model_folder).iterdir():
        if item.suffix != ".safetensors":
            shutil.copy(item, weightless / item.name)
    out = tmp_path / "out"
    assert check.main(["--out", str(out), "--device", "cpu", "--models", str(tiny_model_folder), str(weightless),
                       "--data", str(tiny_csv), "--samples", "8", "--max-length", "12", "--signal-samples", "32",
                       "--dtypes", "float32", "bfloat16", "--steps", "2", "--head", "random"]) == 0
    document = json.loads((out / "gpu_check.json").read_text())
    real, built = document["models"][str(tiny_model_folder)], document["models"][str(weightless)]
    assert real["real_weights"] and not built["real_weights"]
    same_device = real["profiles"]["cpu float32"]
    assert same_device["total_kernel_rel_error"] < 1e-6  # the CPU against itself
    assert same_device["same_advised_rows"] == 1.0
    assert 0 < real["profiles"]["cpu bfloat16"]["total_kernel_rel_error"] < 0.1
    assert set(real["training"]) == {"rocoft advised", "lora-qv"}
    assert all(run["seconds_per_step_median"] > 0 for run in real["training"].values())
    text = (out / "gpu_check.md").read_text()
    assert "seeded random weights" in text and "| cpu bfloat16 |" in text
