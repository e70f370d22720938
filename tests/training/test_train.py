"""The training loop on a tiny model: frozen losses, proximal behaviour, resume, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import tiny_recipe
from safetensors.torch import load_file

from ntk_advisor.errors import DataError, TrainError
from ntk_advisor.recipe.io import apply_overrides
from ntk_advisor.training.loop import train

# Losses of the first steps of tiny_recipe(rocoft), frozen from a verified run. A change means
# the loop's arithmetic changed (data order, schedule, proximal term, clipping): check why.
FROZEN_LOSSES = [0.693995, 0.724013, 0.695573, 0.705989]


def test_a_few_steps_match_frozen_losses(tiny_model_folder, tiny_csv, tmp_path):
    result = train(tiny_recipe(tiny_model_folder, tiny_csv, max_steps=4), tmp_path / "run")
    assert result.metrics["loss_curve"] == pytest.approx(FROZEN_LOSSES, rel=1e-4)


def test_run_folder_contract_and_learning(tiny_model_folder, tiny_csv, tmp_path):
    out = tmp_path / "run"
    result = train(tiny_recipe(tiny_model_folder, tiny_csv, epochs=4), out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"validation_best", "test", "history", "loss_curve", "trainable_parameters", "optimizer_state_bytes",
            "wall_seconds", "peak_memory_bytes", "linearization_gap", "distance_from_theta0", "recipe"} <= set(metrics)
    # Trainable: 3 rows of a 16x24 weight, 2 columns of a 16x16 one, and the 2x16 head with bias.
    assert metrics["trainable_parameters"] == 3 * 24 + 16 * 2 + 2 * 16 + 2
    assert metrics["optimizer_state_bytes"] == 2 * 4 * metrics["trainable_parameters"]  # AdamW: 2 fp32 moments
    assert len(metrics["history"]) == 4
    curve = metrics["loss_curve"]
    assert sum(curve[-8:]) / 8 < sum(curve[:8]) / 8  # it learns something
    assert 0 <= metrics["linearization_gap"] < 1.5
    adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert adapter["bert.encoder.layer.1.output.dense.indices"].tolist() == [0, 3, 7]
    assert (out / "recipe.yaml").read_text().startswith("# ntk-advisor recipe")
    assert result.metrics["test"]["examples"] == 24


def test_lora_run_saves_a_peft_adapter(tiny_model_folder, tiny_csv, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from ntk_advisor.inputs.data import load_dataset, split_dataset
    from ntk_advisor.inputs.models import load_classifier
    from ntk_advisor.training.apply import load_adapter

    out = tmp_path / "lora"
    recipe = tiny_recipe(tiny_model_folder, tiny_csv, method="lora", max_steps=6)
    result = train(recipe, out)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model_folder, num_labels=2)
    model = PeftModel.from_pretrained(base, out / "adapter").eval()  # as a PEFT user loads it, head included
    assert sum("lora_A" in n for n, _ in model.named_parameters()) == 2
    ours = load_adapter(load_classifier(str(tiny_model_folder), num_labels=2, seed=123).backbone, out / "adapter")
    test = split_dataset(load_dataset(str(tiny_csv)), seed=recipe.data.seed).test
    batch = load_classifier(str(tiny_model_folder), num_labels=2).encode(list(test.texts), recipe.data.max_length)
    with torch.no_grad():
        theirs_logits, our_logits = model(**batch).logits, ours.eval()(**batch).logits
    assert torch.allclose(theirs_logits, our_logits, atol=1e-5)
    accuracy = float((theirs_logits.argmax(1) == torch.tensor(test.labels)).float().mean())
    assert accuracy == pytest.approx(result.metrics["test"]["accuracy"])  # the run's own test figure


def test_stronger_proximal_keeps_theta_closer(tiny_model_folder, tiny_csv, tmp_path):
    distances = []
    for strength in (0.0, 1.0, 10.0, 100.0):
        recipe = apply_overrides(tiny_recipe(tiny_model_folder, tiny_csv, max_steps=12),
                                 [f"proximal.lambda={strength}", "proximal.mode=plain"])
        distances.append(train(recipe, tmp_path / f"l{strength}").metrics["distance_from_theta0"])
    assert all(a > b for a, b in zip(distances, distances[1:])), distances


def test_selective_mode_decays_less_than_plain(tiny_model_folder, tiny_csv, tmp_path):
    base = tiny_recipe(tiny_model_folder, tiny_csv, max_steps=12)
    plain = train(apply_overrides(base, ["proximal.lambda=10", "proximal.mode=plain"]), tmp_path / "p")
    selective = train(apply_overrides(base, ["proximal.lambda=10", "proximal.mode=selective"]), tmp_path / "s")
    free = train(base, tmp_path / "f")
    d = [r.metrics["distance_from_theta0"] for r in (plain, selective, free)]
    assert d[0] < d[1] <= d[2] * (1 + 1e-6), d


def test_kill_and_resume_equals_uninterrupted(tiny_model_folder, tiny_csv, tmp_path):
    recipe = tiny_recipe(tiny_model_folder, tiny_csv, epochs=2)  # 2 x 12 steps, checkpoints every 5
    whole = train(recipe, tmp_path / "whole")

    def killer(stage, done, total, metrics):
        if stage == "train" and done == 17:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(recipe, tmp_path / "cut", on_progress=killer)
    assert not (tmp_path / "cut" / "metrics.json").exists()
    resumed = train(recipe, tmp_path / "cut", resume=True)
    a = load_file(str(tmp_path / "whole" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.metrics["test"] == whole.metrics["test"]
    assert resumed.metrics["loss_curve"] == whole.metrics["loss_curve"]


def test_corrupt_newest_checkpoint_is_skipped(tiny_model_folder, tiny_csv, tmp_path):
    recipe = tiny_recipe(tiny_model_folder, tiny_csv, max_steps=10)
    out = tmp_path / "run"
    train(recipe, out)
    newest = max((out / "checkpoints").glob("step-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
    (out / "checkpoints" / "step-99.pt").write_bytes(newest.read_bytes()[:100])  # a torn write
    from ntk_advisor.training.checkpoints import latest_checkpoint

    state, path = latest_checkpoint(out)
    assert path == newest and state["step"] == 10


def test_refuses_to_overwrite_another_run(tiny_model_folder, tiny_csv, tmp_path):
    recipe = tiny_recipe(tiny_model_folder, tiny_csv, max_steps=2)
    out = tmp_path / "run"
    train(recipe, out)
    with pytest.raises(TrainError, match="already holds files.*--resume.*--force"):
        train(recipe, out)
    with pytest.raises(TrainError, match="nothing to resume"):
        train(recipe, tmp_path / "empty", resume=True)
    train(recipe, out, force=True)


def test_bad_recipes_for_training(tiny_model_folder, tiny_csv, tmp_path):
    recipe = tiny_recipe(tiny_model_folder, tiny_csv, max_steps=2)
    wrong = apply_overrides(recipe, ["model.num_labels=3"])
    with pytest.raises(TrainError, match="num_labels is 3 but the data has 2"):
        train(wrong, tmp_path / "a")
    from ntk_advisor.errors import RecipeError

    with pytest.raises(RecipeError, match="training.learning_rate"):
        apply_overrides(recipe, ["training.learning_rate=0"])
    with pytest.raises(RecipeError, match="not key=value"):
        apply_overrides(recipe, ["learning_rate"])


@pytest.mark.slow
def test_two_cpu_processes_run_the_same_recipe(tiny_model_folder, tiny_csv, tmp_path):
    """Data-parallel on 2 CPU processes (torchrun; Accelerate picks up its environment)."""
    import os
    import subprocess
    import sys

    from ntk_advisor.recipe.io import save_recipe

    recipe_path = save_recipe(tiny_recipe(tiny_model_folder, tiny_csv, max_steps=6), tmp_path / "r.yaml")
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    done = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", "29517", "-m", "ntk_advisor.cli",
                           "train", str(recipe_path), "--out", str(tmp_path / "ddp"), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["steps"] == 6
    assert done.stdout.count('"processes"') == 1  # only rank 0 prints


@pytest.mark.parametrize("head_init", ["random", "probe"])
def test_a_frozen_head_is_exported_as_it_was_trained(tiny_model_folder, tiny_csv, tmp_path, head_init):
    from ntk_advisor.exporting.export import merged_model
    from ntk_advisor.training.theta0 import load_for_recipe

    recipe = apply_overrides(tiny_recipe(tiny_model_folder, tiny_csv, max_steps=2, seed=3),
                             [f"model.head_init={head_init}", "training.train_head=false"])
    result = train(recipe, tmp_path / "run")
    # The tiny checkpoint ships a classifier head, so "random" keeps the checkpoint's.
    assert result.metrics["head_init"]["kind"] == ("probe" if head_init == "probe" else "checkpoint")
    theta0, _ = load_for_recipe(recipe)
    merged, _ = merged_model(tmp_path / "run")
    head = theta0.head_name
    torch.testing.assert_close(merged.get_submodule(head).weight, theta0.backbone.get_submodule(head).weight)
    if head_init == "probe":  # the tiny checkpoint ships a head: the probe must have replaced it
        initial = load_for_recipe(apply_overrides(recipe, ["model.head_init=random"]))[0]
        assert not torch.allclose(theta0.backbone.get_submodule(head).weight,
                                  initial.backbone.get_submodule(head).weight)


def test_probe_head_init_is_refused_for_label_words(tiny_model_folder, tiny_csv):
    from ntk_advisor.errors import RecipeError

    with pytest.raises((RecipeError, ValueError), match="head_init probe"):
        apply_overrides(tiny_recipe(tiny_model_folder, tiny_csv), ["model.task=label-words", "model.head_init=probe"])


def test_a_bf16_accelerate_state_left_by_an_earlier_trainer_does_not_change_the_run(tiny_model_folder, tiny_csv,
                                                                                    tmp_path):
    """Accelerate keeps one state per process; TRL's SFTConfig trains in bf16 by default, so a
    pipeline that ran SFTTrainer before `train` used to hand it bf16 autocast: the same recipe
    trained to other weights. The run now trains as in a fresh process, and gives the earlier
    state back to its owner, also when the run fails; an empty state stays empty."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState, PartialState

    def forget_state():  # as in a new process
        for singleton in (PartialState, AcceleratorState, GradientState):
            singleton._shared_state.clear()

    recipe = tiny_recipe(tiny_model_folder, tiny_csv, max_steps=4)
    forget_state()
    fresh = load_file(str(train(recipe, tmp_path / "fresh").out / "adapter" / "adapter_model.safetensors"))
    assert AcceleratorState._shared_state == {} and PartialState._shared_state == {}
    try:
        owner = Accelerator(cpu=True, mixed_precision="bf16", gradient_accumulation_steps=4)  # a Trainer's set-up
        after = load_file(str(train(recipe, tmp_path / "after").out / "adapter" / "adapter_model.safetensors"))
        assert owner.mixed_precision == "bf16" and AcceleratorState().mixed_precision == "bf16"  # given back
        assert GradientState().num_steps == 4
        missing = recipe.model_copy(update={"data": recipe.data.model_copy(update={"source": str(tmp_path / "x.csv")})})
        with pytest.raises(DataError, match="x.csv"):
            train(missing, tmp_path / "failed")
        assert AcceleratorState().mixed_precision == "bf16" and GradientState().num_steps == 4
    finally:
        forget_state()  # later tests start from no state
    assert fresh.keys() == after.keys() and all(torch.equal(fresh[k], after[k]) for k in fresh)
