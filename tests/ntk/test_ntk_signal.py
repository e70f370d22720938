"""Label-gradient row/column scores (ntk.signal) against a vmap(jacrev) oracle and the kernels."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_batch, tiny_classifier
from test_ntk_kernels import LABELS3, PREFIX, modules_of, oracle_jacobian, rel

from ntk_advisor.ntk import OutputSpec, label_gradient_scores, structured_kernels


def _tolerance(loaded) -> float:
    """Llama's query/key gradients from a plain weight backward differ from the captured-δ and
    vmap(jacrev) routes by ~1e-7 in float64 (HF's eager Llama attention runs its softmax in
    float32, so the two differentiation paths round differently); exact elsewhere."""
    return 1e-6 if loaded.backbone.config.model_type == "llama" else 1e-10


def _weights(loaded, targets):
    return {t.name: (loaded.backbone.get_submodule(t.name).weight, t.transposed) for t in targets}


def _scores(loaded, targets, spec, batch, batch_size):
    y = spec.output_targets()
    n = batch["input_ids"].shape[0]
    batches = (({k: v[i:i + batch_size] for k, v in batch.items()}, y[i:i + batch_size])
               for i in range(0, n, batch_size))
    return label_gradient_scores(loaded.logits_model, batches, _weights(loaded, targets), spec.stack_outputs, n)


@pytest.mark.parametrize("reduction,num_labels", [("trace", 3), ("margin", 2)])
def test_scores_match_jacobian_oracle(tiny_model, reduction, num_labels):
    loaded = tiny_classifier(tiny_model.backbone.config.model_type, num_labels=num_labels)
    spec = OutputSpec(reduction, num_labels, LABELS3 % num_labels)
    targets, _ = modules_of(loaded)
    batch = tiny_batch()
    got = _scores(loaded, targets, spec, batch, batch_size=4)
    y = spec.output_targets()  # (N, O)
    for t in targets:
        jac = oracle_jacobian(loaded.logits_model, batch, {PREFIX + t.name + ".weight"}, spec)  # (N, O, P)
        if t.transposed:
            jac = jac.reshape(*jac.shape[:-1], t.d_in, t.d_out).transpose(-1, -2)
        gradient = torch.einsum("no,noij->ij", y, jac.reshape(*jac.shape[:2], t.d_out, t.d_in)) / len(y)
        rows, cols, spectrum = got[t.name].rows, got[t.name].cols, got[t.name].spectrum
        assert rel(rows, gradient.square().sum(1)) < _tolerance(loaded), t.name
        assert rel(cols, gradient.square().sum(0)) < _tolerance(loaded), t.name
        assert rel(spectrum, torch.linalg.svdvals(gradient).square()) < _tolerance(loaded), t.name
        assert (spectrum[:-1] >= spectrum[1:]).all()
        best_rank_one = torch.linalg.matrix_norm(gradient, ord=2) ** 2  # Eckart-Young: σ_1² = best rank-1 energy
        assert torch.allclose(spectrum[0], best_rank_one.detach(), rtol=1e-6)


def test_scores_are_the_full_reductions_alignment_over_m_squared(tiny_model):
    """M²·score = the `full` reduction's row / column alignment numerator on the same sample."""
    loaded = tiny_classifier(tiny_model.backbone.config.model_type, num_labels=3)
    targets, modules = modules_of(loaded)
    batch = tiny_batch()
    kernels = structured_kernels(loaded.logits_model, batch, modules, OutputSpec("full", 3, LABELS3))
    got = _scores(loaded, targets, OutputSpec("trace", 3, LABELS3), batch, batch_size=6)
    for t in targets:
        rows, cols = got[t.name].rows, got[t.name].cols
        assert rel(rows * 36, kernels[PREFIX + t.name].row_alignment) < _tolerance(loaded)
        assert rel(cols * 36, kernels[PREFIX + t.name].col_alignment) < _tolerance(loaded)


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_batching_and_padding_do_not_change_scores(batch_size):
    loaded = tiny_classifier("bert", num_labels=3)
    spec = OutputSpec("trace", 3, LABELS3)
    targets, _ = modules_of(loaded)
    whole = _scores(loaded, targets, spec, tiny_batch(), batch_size=6)
    base = tiny_batch()  # the same token ids, padded 4 tokens further
    padded = {k: torch.cat([base[k], torch.zeros(6, 4, dtype=base[k].dtype)], 1) for k in base}
    split = _scores(loaded, targets, spec, padded, batch_size=batch_size)
    for name, scores in whole.items():
        assert rel(split[name].rows, scores.rows) < 1e-10 and rel(split[name].cols, scores.cols) < 1e-10
        for total in (scores.cols.sum(), scores.spectrum.sum()):  # all three are ‖G‖²_F
            assert torch.allclose(scores.rows.sum(), total)


def test_trainable_flags_restored_and_single_class_is_zero():
    loaded = tiny_classifier("bert", num_labels=2)
    frozen = next(iter(loaded.backbone.parameters()))
    frozen.requires_grad_(False)
    flags = {n: p.requires_grad for n, p in loaded.backbone.named_parameters()}
    spec = OutputSpec("trace", 2, torch.zeros(6, dtype=torch.long))  # one class: Ỹ = 0
    targets, _ = modules_of(loaded)
    got = _scores(loaded, targets, spec, tiny_batch(), batch_size=3)
    assert all(float(scores.rows.abs().max()) == 0.0 for scores in got.values())
    assert flags == {n: p.requires_grad for n, p in loaded.backbone.named_parameters()}


def test_overflowed_gradient_gives_nan_scores_not_a_linear_algebra_error():
    """The profiler names the module from NaN scores; the SVD must not fail first."""
    loaded = tiny_classifier("bert", num_labels=2)
    targets, _ = modules_of(loaded)
    with torch.no_grad():
        loaded.backbone.get_submodule(targets[0].name).weight[0, 0] = float("nan")
    got = _scores(loaded, targets, OutputSpec("trace", 2, LABELS3 % 2), tiny_batch(), batch_size=6)
    assert not torch.isfinite(got[targets[0].name].rows).all()
    assert torch.isnan(got[targets[0].name].spectrum).all()
