"""place(): profile, recommend and apply in one call, on an in-memory model."""

from __future__ import annotations

import pytest
import torch

from ntk_advisor.errors import DataError
from ntk_advisor.inputs.data import load_dataset
from ntk_advisor.inputs.models import load_classifier


@pytest.mark.parametrize("method", ["rocoft", "lora"])
def test_place_applies_the_recommended_budget(tiny_model_folder, tiny_csv, tmp_path, method):
    from ntk_advisor import place

    loaded = load_classifier(str(tiny_model_folder), num_labels=2)
    data = load_dataset(str(tiny_csv))
    model, recipe = place(loaded.backbone, loaded.tokenizer, data.texts, data.labels, budget=400, method=method,
                          samples=12, max_length=12, signal_samples=64, keep=tmp_path / "kept")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == recipe.evidence["trainable"]["total"] <= 400
    assert recipe.method == method and recipe.evidence["uncertainty"]["reference"]
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["examples.jsonl", "model", "profile",
                                                                      "recipe.yaml"]
    batch = loaded.encode(list(data.texts[:4]), 12)
    model.eval()
    with torch.no_grad():  # at θ0 the placed model computes what the pretrained one did
        placed = model(**batch).logits
        plain = load_classifier(str(tiny_model_folder), num_labels=2).backbone.eval()(**batch).logits
    assert torch.allclose(placed, plain, atol=1e-6)


def test_place_refuses_mismatched_inputs(tiny_model_folder):
    from ntk_advisor import place

    loaded = load_classifier(str(tiny_model_folder), num_labels=2)
    with pytest.raises(DataError, match="got 3 texts but 2 labels"):
        place(loaded.backbone, loaded.tokenizer, ["a", "b", "c"], [0, 1], budget=100)
    with pytest.raises(TypeError, match="unknown setting 'alocation'"):
        place(loaded.backbone, loaded.tokenizer, ["a", "b"], [0, 1], budget=100, alocation="uniform")
