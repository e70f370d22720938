"""RoCoFT slices: exact at init, only the chosen rows/columns move, merge/unmerge, adapter round trip."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_batch, tiny_classifier

from ntk_advisor.methods.rocoft import (
    apply_rocoft,
    load_rocoft_adapter,
    merge_rocoft,
    save_rocoft_adapter,
    slice_modules,
)

TARGETS = {
    "bert": [("bert.encoder.layer.0.attention.self.query", "rows", [1, 5, 9]),
             ("bert.encoder.layer.1.output.dense", "cols", [0, 7, 23])],
    "gpt2": [("transformer.h.0.mlp.c_fc", "rows", [2, 40]), ("transformer.h.1.attn.c_proj", "cols", [3, 4])],
    "llama": [("model.layers.0.mlp.down_proj", "rows", [0, 15]), ("model.layers.1.self_attn.q_proj", "cols", [8])],
}
HEAD = {"bert": "classifier.weight", "gpt2": "score.weight", "llama": "score.weight"}


def logits(loaded):
    return loaded.logits_model(**tiny_batch())


@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama"])
def test_exact_at_init_and_only_chosen_slices_move(arch):
    loaded = tiny_classifier(arch)
    before = logits(loaded).detach()
    base = {k: v.clone() for k, v in loaded.backbone.state_dict().items()}
    apply_rocoft(loaded.backbone, TARGETS[arch], extra_trainable=[HEAD[arch]])
    assert torch.equal(logits(loaded).detach(), before)  # Δ = 0: bit-identical
    trainable = [n for n, p in loaded.backbone.named_parameters() if p.requires_grad]
    assert sorted(trainable) == sorted([f"{t[0]}.delta" for t in TARGETS[arch]] + [HEAD[arch]])
    optimizer = torch.optim.SGD([p for p in loaded.backbone.parameters() if p.requires_grad], lr=0.1)
    logits(loaded).square().sum().backward()
    optimizer.step()
    merge_rocoft(loaded.backbone)
    after = loaded.backbone.state_dict()
    assert set(after) == set(base)  # merged back into a plain model
    for key, value in after.items():
        changed = ~torch.isclose(value, base[key], rtol=0, atol=0)
        target = next((t for t in TARGETS[arch] if key == t[0] + ".weight"), None)
        if target is not None:
            name, axis, indices = target
            conv = arch == "gpt2"
            dense = changed.T if conv else changed  # Conv1D stores [d_in, d_out]
            allowed = torch.zeros_like(dense)
            if axis == "rows":
                allowed[indices] = True
            else:
                allowed[:, indices] = True
            assert dense.any() and not (dense & ~allowed).any(), key
        elif key != HEAD[arch]:
            assert not changed.any(), f"{key} moved"


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_merge_then_unmerge_is_identity_and_merged_logits_match(arch):
    loaded = tiny_classifier(arch)
    wrapped = apply_rocoft(loaded.backbone, TARGETS[arch])
    torch.manual_seed(1)
    for module in wrapped.values():
        module.delta.data.normal_()
    weights = {n: m.base.weight.clone() for n, m in wrapped.items()}
    unmerged = logits(loaded).detach()
    for module in wrapped.values():
        module.merge()
    assert torch.allclose(logits(loaded).detach(), unmerged, atol=1e-10)
    for module in wrapped.values():
        module.unmerge()
    for name, module in wrapped.items():
        assert torch.allclose(module.base.weight, weights[name], atol=1e-12)


def test_adapter_round_trip_gives_identical_logits(tmp_path):
    loaded = tiny_classifier("llama")
    wrapped = apply_rocoft(loaded.backbone, TARGETS["llama"], extra_trainable=[HEAD["llama"]])
    torch.manual_seed(2)
    for module in wrapped.values():
        module.delta.data.normal_()
    loaded.backbone.score.weight.data.normal_()
    expected = logits(loaded).detach()
    save_rocoft_adapter(loaded.backbone, tmp_path, {"base_model": "tiny"})
    fresh = tiny_classifier("llama")  # same seed: same base weights, untouched head
    assert not torch.allclose(logits(fresh).detach(), expected)
    load_rocoft_adapter(fresh.backbone, tmp_path)
    assert torch.equal(logits(fresh).detach(), expected)
    assert set(slice_modules(fresh.backbone)) == {t[0] for t in TARGETS["llama"]}


def test_optimizer_state_exists_for_slices_only():
    loaded = tiny_classifier("bert")
    apply_rocoft(loaded.backbone, TARGETS["bert"])
    params = [p for p in loaded.backbone.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    logits(loaded).sum().backward()
    optimizer.step()
    state_numel = sum(t.numel() for s in optimizer.state.values() for k, t in s.items() if k != "step")
    assert state_numel == 2 * (3 * 16 + 16 * 3)  # exp_avg + exp_avg_sq of the two slices
    assert all(p.grad is None for p in loaded.backbone.parameters() if not p.requires_grad)


def test_bad_targets():
    loaded = tiny_classifier("bert")
    with pytest.raises(ValueError, match="not a Linear"):
        apply_rocoft(loaded.backbone, [("bert.embeddings.word_embeddings", "rows", [0])])
    apply_rocoft(loaded.backbone, [("classifier", "rows", [0])])
    with pytest.raises(ValueError, match="already has"):
        apply_rocoft(loaded.backbone, [("classifier", "rows", [1])])
