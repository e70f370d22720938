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


def _trainer(model, tokenizer, data, callback, tmp_path, steps=3, **kwargs):
    from transformers import Trainer, TrainingArguments

    rows = [dict(tokenizer(t, truncation=True, max_length=12), labels=int(y))
            for t, y in zip(data.texts[:8 * steps], data.labels[:8 * steps])]
    args = TrainingArguments(output_dir=str(tmp_path / "hf"), max_steps=steps, per_device_train_batch_size=8,
                             learning_rate=1e-2, report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True)
    return Trainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer,
                   callbacks=[callback], **kwargs)


@pytest.mark.parametrize("method", ["rocoft", "lora"])
def test_placement_callback_trains_only_the_placed_budget(tiny_model_folder, tiny_csv, tmp_path, method):
    from ntk_advisor import PlacementCallback

    loaded = load_classifier(str(tiny_model_folder), num_labels=2)
    data = load_dataset(str(tiny_csv))
    model = loaded.backbone
    callback = PlacementCallback(loaded.tokenizer, data.texts, data.labels, budget=400, method=method,
                                 samples=12, max_length=12, signal_samples=64)
    trainer = _trainer(model, loaded.tokenizer, data, callback, tmp_path)
    assert callback.recipe.method == method  # placed while Trainer was built, before its optimizer
    trainable = {n: p.detach().clone() for n, p in callback.model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in callback.model.named_parameters() if not p.requires_grad}
    assert sum(p.numel() for p in trainable.values()) == callback.recipe.evidence["trainable"]["total"] <= 400
    trainer.train()
    after = dict(callback.model.named_parameters())
    assert all(torch.equal(after[n], p) for n, p in frozen.items())
    moved = [n for n, p in trainable.items() if not torch.equal(after[n], p)]
    assert moved == list(trainable)  # every placed tensor trained: the optimizer was built after placement
    assert callback.proximal.distance(callback.model) > 0


@pytest.mark.parametrize("mode", ["plain", "selective"])
def test_placement_callback_adds_the_proximal_gradient(tiny_model_folder, tiny_csv, tmp_path, mode):
    """Plain: grad gains λ(θ − θ0), the gradient of (λ/2)‖θ − θ0‖²; selective only where gᵀ(θ − θ0) < 0."""
    from ntk_advisor import PlacementCallback

    loaded = load_classifier(str(tiny_model_folder), num_labels=2)
    data = load_dataset(str(tiny_csv))
    callback = PlacementCallback(loaded.tokenizer, data.texts, data.labels, budget=400, samples=12, max_length=12,
                                 signal_samples=64)
    callback.on_init_end(None, None, "control", model=loaded.backbone)
    callback.proximal.strength, callback.proximal.mode = 0.5, mode
    named = callback.proximal.trainable(callback.model)
    torch.manual_seed(0)
    with torch.no_grad():
        for _, p in named:
            p.add_(torch.randn_like(p))
            p.grad = torch.randn_like(p)
    grads = {n: p.grad.clone() for n, p in named}
    assert callback.on_pre_optimizer_step(None, None, "control") == "control"
    penalty = callback.proximal.strength * 0.5 * sum((p - callback.proximal.theta0[n]).square().sum()
                                                    for n, p in named)
    autograd = dict(zip([n for n, _ in named], torch.autograd.grad(penalty, [p for _, p in named])))
    kinds = set()
    for name, p in named:
        away = float((grads[name] * (p.detach() - callback.proximal.theta0[name])).sum()) < 0
        kinds.add(away)
        expected = grads[name] + autograd[name] if mode == "plain" or away else grads[name]
        assert torch.allclose(p.grad, expected, atol=1e-6)
    assert kinds == {True, False}  # both branches of the selective rule were exercised


def test_placement_callback_refuses_a_ready_optimizer(tiny_model_folder, tiny_csv):
    from ntk_advisor import PlacementCallback

    loaded = load_classifier(str(tiny_model_folder), num_labels=2)
    data = load_dataset(str(tiny_csv))
    callback = PlacementCallback(loaded.tokenizer, data.texts, data.labels, budget=400)
    with pytest.raises(TypeError, match="before the optimizer exists"):
        callback.on_init_end(None, None, None, model=loaded.backbone, optimizer=object())
    assert callback.on_log(None, None, "control") == "control"  # every other event is a no-op
    with pytest.raises(AttributeError):
        callback.not_an_event
    with pytest.raises(RuntimeError, match="placed nothing on the model Trainer is training"):
        callback.on_train_begin(None, None, None, model=loaded.backbone)  # added after Trainer was built


PLACE_ON_EVERY_RANK = """
import json, os, sys
import torch.distributed as dist
from ntk_advisor import place
from ntk_advisor.inputs.data import load_dataset
from ntk_advisor.inputs.models import load_classifier

dist.init_process_group("gloo")  # as DDP (a Trainer under torchrun) has it before the callback runs
loaded = load_classifier(sys.argv[1], num_labels=2)
data = load_dataset(sys.argv[2])
model, recipe = place(loaded.backbone, loaded.tokenizer, data.texts, data.labels, budget=400, method="rocoft",
                      samples=12, max_length=12, signal_samples=64, device="cpu")
placed = [(t.module, list(t.indices)) for t in recipe.targets]
trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
# One write of the whole line: print's text and newline are two writes, and the other rank's
# line can land between them on the shared pipe (seen once in CI).
os.write(1, ("PLACED " + json.dumps({"rank": dist.get_rank(), "targets": placed, "trainable": trainable}) + "\\n").encode())
dist.destroy_process_group()
"""


def test_place_under_ddp_splits_the_profile_and_gives_every_rank_rank0s_recipe(tiny_model_folder, tiny_csv, tmp_path):
    import json

    from helpers import torchrun

    from ntk_advisor import place

    script = tmp_path / "place_ddp.py"
    script.write_text(PLACE_ON_EVERY_RANK)
    done = torchrun([script, tiny_model_folder, tiny_csv], 29518)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads(line[len("PLACED "):]) for line in done.stdout.splitlines() if line.startswith("PLACED ")]
    assert sorted(r["rank"] for r in ranks) == [0, 1]
    assert ranks[0]["targets"] == ranks[1]["targets"] and ranks[0]["trainable"] == ranks[1]["trainable"]
    loaded = load_classifier(str(tiny_model_folder), num_labels=2)
    data = load_dataset(str(tiny_csv))
    _, alone = place(loaded.backbone, loaded.tokenizer, data.texts, data.labels, budget=400, method="rocoft",
                     samples=12, max_length=12, signal_samples=64)
    assert ranks[0]["targets"] == [[t.module, list(t.indices)] for t in alone.targets]  # as one process places
