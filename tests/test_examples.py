"""The examples run as tests, on real weights and data."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_library_pipeline_example():
    summary = load("library_pipeline").main(steps=3)
    assert summary["trainable"] == summary["budget"] <= 30_000
    assert len(summary["losses"]) == 3 and summary["distance_from_theta0"] > 0


@pytest.mark.slow
def test_hf_trainer_example():
    summary = load("hf_trainer").main(steps=2)
    assert len(summary["losses"]) == 2 and summary["adapter_round_trip_equal"]
    assert summary["trainable"] == 21_506


@pytest.mark.slow
def test_place_in_pipeline_example():
    summary = load("place_in_pipeline").main(steps=3)
    assert summary["trainable"] == summary["budget"] <= 21_506
    assert summary["modules"] == 36  # one best row in each of minilm-l6's block Linears, at least
    assert len(summary["losses"]) == 3 and all(loss > 0 for loss in summary["losses"])


@pytest.mark.slow
def test_trainer_callback_example():
    summary = load("trainer_callback").main(steps=3)
    assert summary["trainable"] == summary["budget"] <= 21_506
    assert len(summary["losses"]) == 3 and summary["distance_from_theta0"] > 0
    # Only what the callback placed trained: LoRA factors and the head's copy; no pretrained tensor moved.
    assert summary["frozen_moved"] == []
    assert any("lora_B" in n for n in summary["trained_moved"])
    assert any("modules_to_save" in n for n in summary["trained_moved"])
    assert "adapter_config.json" in summary["saved"]
