"""profile(): the folder contract, reproducibility from the folder alone, and bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import tiny_batch, tiny_classifier
from safetensors.torch import load_file

from ntk_advisor.errors import OutputError, ProfileError
from ntk_advisor.ntk import OutputSpec, kernel_report
from ntk_advisor.profiling.folder import load_profile, save_profile
from ntk_advisor.profiling.profiler import ProfileConfig, profile, profile_model

LABELS = torch.tensor([0, 1, 0, 1, 1, 0])


def tiny_profile(arch="bert", labels=LABELS, **overrides):
    loaded = tiny_classifier(arch)
    config = ProfileConfig(model="tiny", data="tiny", samples=len(labels), **overrides)
    return loaded, profile_model(loaded, tiny_batch(), labels, config, lambda *a: None)


def test_profile_numbers_are_consistent_and_recomputable(tmp_path):
    _, result = tiny_profile()
    modules = [m.name for m in result.modules]
    total = sum(result.kernels[m] for m in modules)
    assert torch.allclose(result.kernels["total"], total)
    for m in result.modules:
        assert math.isclose(float(result.scores["rows"][m.name].sum()), m.trace, rel_tol=1e-9)
        assert math.isclose(float(result.scores["cols"][m.name].sum()), m.trace, rel_tol=1e-9)
    folder = save_profile(result, tmp_path / "prof")
    again = load_profile(folder)
    # Every number in profile.json can be recomputed from the folder alone.
    spec = OutputSpec(again.settings["reduction"], again.settings["num_outputs"], again.inputs["labels"])
    for m in again.modules:
        fresh = kernel_report(again.kernels[m.name], spec.centred_targets(), spec.regression_targets(),
                              spec.labels, spec.predicted_classes, ridge=again.settings["ridge"])
        for key, value in fresh.items():
            assert getattr(m, key) == pytest.approx(value, rel=1e-9, nan_ok=True), (m.name, key)
    assert torch.equal(again.inputs["input_ids"], tiny_batch()["input_ids"])
    assert again.total["spectrum"] == pytest.approx(torch.linalg.eigvalsh(total).tolist(), rel=1e-9, abs=1e-12)


def test_existing_folder_is_refused_then_replaced_with_force(tmp_path):
    _, result = tiny_profile()
    target = tmp_path / "prof"
    save_profile(result, target)
    with pytest.raises(OutputError, match="already exists.*--force"):
        save_profile(result, target)
    save_profile(result, target, force=True)
    assert load_profile(target).settings["samples"] == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prof"]  # no temporary folders left


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    _, result = tiny_profile()
    import ntk_advisor.profiling.folder as artifacts

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(artifacts, "save_file", broken)
    with pytest.raises(OSError):
        save_profile(result, tmp_path / "prof")
    assert list(tmp_path.iterdir()) == []


def test_nan_kernel_names_the_module():
    loaded = tiny_classifier("bert")
    with torch.no_grad():
        loaded.backbone.bert.encoder.layer[1].output.dense.weight[0, 0] = float("nan")
    config = ProfileConfig(model="tiny", data="tiny", samples=6)
    with pytest.raises(ProfileError, match=r"NaN or Inf entries \(first: 'bert\.encoder\.layer\.0\.attention\.self\.query'\)"):
        profile_model(loaded, tiny_batch(), LABELS, config, lambda *a: None)


def test_single_class_sample_warns_and_reports_undefined():
    _, result = tiny_profile(labels=torch.zeros(6, dtype=torch.long))
    assert any("single class" in w for w in result.warnings)
    assert all(math.isnan(m.alignment) and math.isnan(m.loo_accuracy) for m in result.modules)
    assert all(m.trace > 0 for m in result.modules)


def test_module_filter_and_unknown_module():
    _, result = tiny_profile(modules=("bert.encoder.layer.0.attention.self.query",))
    assert [m.name for m in result.modules] == ["bert.encoder.layer.0.attention.self.query"]
    with pytest.raises(ProfileError, match="unknown module 'nope'"):
        tiny_profile(modules=("nope",))


@pytest.mark.parametrize("field,value,message", [
    ("samples", 1, "at least 2"), ("max_length", 0, "at least 1"), ("head", "magic", "unknown --head"),
    ("route", "guess", "unknown --route"), ("reduction", "mean", "unknown --output"),
    ("signal_samples", -1, "--signal-samples"), ("signal_samples", 1, "at least 2 examples"),
])
def test_config_validation(field, value, message):
    with pytest.raises(ProfileError, match=message):
        ProfileConfig(**{field: value}).check()


def test_margin_needs_binary():
    loaded = tiny_classifier("bert", num_labels=3)
    with pytest.raises(ProfileError, match="binary"):
        profile_model(loaded, tiny_batch(), LABELS, ProfileConfig(reduction="margin"), lambda *a: None)


@pytest.mark.slow
def test_real_profile_rebuilds_exact_model_and_routes_agree(tmp_path):
    config = ProfileConfig(model="minilm-l6", data="vader-movie", samples=12, max_length=24, seed=1,
                           head_train_examples=300, signal_samples=96)
    result = profile(config)
    assert result.head_report["kind"] == "probe" and 0.55 < result.head_report["validation_accuracy"] <= 1.0
    folder = save_profile(result, tmp_path / "prof")
    document = json.loads((folder / "profile.json").read_text())
    assert len(document["modules"]) == 38 and document["settings"]["samples"] == 12
    assert document["settings"]["signal_samples"] == 96 and document["timing"]["signal_s"] > 0
    for name, rows in result.scores["rows_signal"].items():  # both sum to ‖G‖²_F of the module
        assert torch.isfinite(rows).all() and rows.min() >= 0 and rows.sum() > 0
        assert torch.allclose(rows.sum(), result.scores["cols_signal"][name].sum(), rtol=1e-9)
    head = load_file(str(folder / "head.safetensors"))
    assert set(head) == {"classifier.weight", "classifier.bias"}
    # Rebuild the profiled model from the folder: same logits through the saved head.
    from ntk_advisor.inputs.models import load_classifier

    rebuilt = load_classifier("minilm-l6", num_labels=2, seed=123)
    rebuilt.backbone.load_state_dict(head, strict=False)
    loaded_profile = load_profile(folder)
    inputs = {k: loaded_profile.inputs[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        logits = rebuilt.logits_model(**inputs)
    spec = OutputSpec("trace", 2, loaded_profile.inputs["labels"])
    # The reference route on a few modules of the rebuilt model matches the stored kernels.
    names = ["bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.5.output.dense", "classifier"]
    from ntk_advisor.ntk import jacobian_kernels

    ref = jacobian_kernels(rebuilt.logits_model, inputs,
                           {n: ("backbone." + n + ".weight", False) for n in names}, spec, chunk_size=4)
    for n in names:
        stored = loaded_profile.kernels[n]
        assert float((ref[n].kernel - stored).norm() / stored.norm()) < 1e-4, n
    assert torch.isfinite(logits).all()


@pytest.mark.slow
def test_real_decoder_routes_agree():
    """smollm2-135m (Llama, causal 4-D mask under vmap): structured equals vmap(jacrev) on real weights."""
    modules = ("model.layers.0.self_attn.q_proj", "model.layers.15.mlp.down_proj", "score")
    settings = dict(model="smollm2-135m", samples=6, max_length=12, head="random", modules=modules)
    fast = profile(ProfileConfig(**settings))
    slow = profile(ProfileConfig(**settings, route="jacobian"))
    for name in modules:
        assert float((fast.kernels[name] - slow.kernels[name]).norm() / slow.kernels[name].norm()) < 1e-4, name


@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama"])
@pytest.mark.parametrize("dtype, total_tolerance, module_tolerance", [("bfloat16", 1e-2, 5e-2),
                                                                     ("float16", 2e-3, 1e-1)])
def test_half_precision_profiles_agree_with_float64(arch, dtype, total_tolerance, module_tolerance):
    """Half-precision weights round every activation, so the total kernel moves by about the
    precision's relative step (bf16 2^-8, fp16 2^-11), not more; they stay float64, symmetric
    and PSD. A single small module moves more: measured worst 1.5e-2 (bf16) and 4.5e-2 (fp16,
    whose 5-bit exponent flushes the tiniest attention gradients that bf16 keeps)."""
    reference = tiny_profile(arch, dtype="float64")[1]
    loaded = tiny_classifier(arch)
    loaded.backbone.to(getattr(torch, dtype))
    config = ProfileConfig(model="tiny", data="tiny", samples=len(LABELS), dtype=dtype)
    half = profile_model(loaded, tiny_batch(), LABELS, config, lambda *a: None)
    for name, kernel in half.kernels.items():
        want = reference.kernels[name]
        scale = float(kernel.diagonal().abs().max())
        assert kernel.dtype == torch.float64 and float((kernel - kernel.T).abs().max()) <= 1e-6 * scale
        assert float(torch.linalg.eigvalsh(kernel).min()) >= -1e-8 * float(kernel.diagonal().sum())
        tolerance = total_tolerance if name == "total" else module_tolerance
        assert float((kernel - want).norm() / want.norm()) < tolerance, name
    assert half.settings["dtype"] == dtype
