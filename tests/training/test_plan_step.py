"""`plan --recipe`: one training step counted on the meta device, checked against the same
step on real tensors of a tiny model (trainable set, flops formula, saved activations)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import assert_one_line_error, run_cli, tiny_recipe

from ntk_advisor.inputs import models
from ntk_advisor.recipe.io import save_recipe
from ntk_advisor.training.apply import apply_recipe
from ntk_advisor.training.plan import TRAINABLE_COPIES, data_step_facts, plan_step, saved_activation_bytes


def _real_model(recipe):
    loaded = models.load_classifier(recipe.model.name, num_labels=recipe.model.num_labels, with_tokenizer=False)
    trained, _ = apply_recipe(loaded.backbone, recipe, loaded.head_name)
    return trained.train()


@pytest.mark.parametrize("method", ["rocoft", "lora"])
def test_the_meta_step_trains_what_train_trains_and_counts_the_formula(tiny_model_folder, tiny_csv, method):
    recipe = tiny_recipe(tiny_model_folder, tiny_csv, method)
    plan = plan_step(recipe, tokens=10.0)
    real = _real_model(recipe)
    trainable = sum(p.numel() for p in real.parameters() if p.requires_grad)
    assert plan.trainable == trainable > 0
    assert plan.memory["trainable state"] == TRAINABLE_COPIES * 4 * trainable  # float32, six copies
    # forward = 2·B·T·P_lin + 4·B·T²·H·L over the products the placed model runs
    products = sum(m.weight.numel() for m in real.modules() if isinstance(m, torch.nn.Linear))
    products += sum(m.delta.numel() for m in real.modules() if isinstance(getattr(m, "delta", None), torch.nn.Parameter))
    batch, config = recipe.training.batch_size, real.config
    attention = 4 * batch * 10.0 ** 2 * config.hidden_size * config.num_hidden_layers
    assert plan.flops["forward"] == pytest.approx(2 * batch * 10.0 * products + attention)
    assert plan.flops["activation grads"] == pytest.approx(2 * batch * 10.0 * products + 2 * attention)
    frozen_products = plan_step(recipe.model_copy(update={"targets": recipe.targets[:1]}), tokens=10.0)
    assert frozen_products.flops["weight grads"] < plan.flops["weight grads"]  # fewer trainable weights


@pytest.mark.parametrize("method", ["rocoft", "lora"])
def test_saved_activations_on_meta_equal_those_of_a_real_forward(tiny_model_folder, tiny_csv, method):
    """The meta device is the stand-in: the same forward on real float32 tensors saves the same bytes."""
    recipe = tiny_recipe(tiny_model_folder, tiny_csv, method)
    planned = plan_step(recipe, peak_tokens=9).memory["activations"]
    real = _real_model(recipe)
    saved: dict[int, torch.Tensor] = {}

    def keep(tensor):
        saved[id(tensor)] = tensor
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        real(input_ids=torch.ones(recipe.training.batch_size, 9, dtype=torch.long))
    assert planned == sum(t.numel() * t.element_size() for t in saved.values()) > 0
    assert plan_step(recipe, peak_tokens=9).memory["activations"] < plan_step(recipe, peak_tokens=12).memory[
        "activations"]


def test_a_causal_lm_step_counts_the_vocabulary_log_probabilities(tiny_llama_folder):
    from ntk_advisor.recipe.io import parse_recipe
    from ntk_advisor.recipe.schema import SCHEMA_VERSION

    recipe = parse_recipe({"schema_version": SCHEMA_VERSION, "model": {"name": str(tiny_llama_folder), "task": "sft"},
                           "data": {"source": "bbc-headlines", "max_length": 8}, "method": "lora",
                           "targets": [{"module": "model.layers.0.self_attn.q_proj", "rank": 2}],
                           "training": {"batch_size": 4}})
    plan = plan_step(recipe)
    lm = models.meta_classifier(str(tiny_llama_folder), 2, causal=True)
    vocabulary = lm.config.vocab_size
    assert plan.trainable == 2 * (16 + 16)  # A and B of one rank-2 q_proj, no head
    assert plan.memory["activations"] >= 4 * 8 * vocabulary * 4  # the (B, T, V) float32 log-probabilities
    assert plan.memory["activations"] == saved_activation_bytes(
        apply_recipe(lm, recipe)[0].train(), batch=4, length=8)


def test_sft_batches_count_the_prompt_and_the_completion(tiny_llama_folder, tmp_path):
    from ntk_advisor.inputs import models as model_files
    from ntk_advisor.recipe.io import parse_recipe
    from ntk_advisor.recipe.schema import SCHEMA_VERSION

    pairs = [("Review : good film", " positive"), ("Review : the plot was very dull and not fun", " negative")] * 20
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in pairs))
    recipe = parse_recipe({"schema_version": SCHEMA_VERSION, "model": {"name": str(tiny_llama_folder), "task": "sft"},
                           "data": {"source": str(data), "max_length": 30}, "method": "lora",
                           "targets": [{"module": "model.layers.0.self_attn.q_proj", "rank": 2}],
                           "training": {"batch_size": 4}})
    tokenizer = model_files.load_tokenizer(str(tiny_llama_folder))
    longest = max(len(tokenizer(p)["input_ids"]) + len(tokenizer(c, add_special_tokens=False)["input_ids"])
                  for p, c in pairs)
    facts = data_step_facts(recipe)
    assert facts["peak_tokens"] == longest and 4 <= facts["tokens"] <= longest


def test_data_facts_give_the_padded_length_and_the_steps(tiny_model_folder, tiny_csv):
    recipe = tiny_recipe(tiny_model_folder, tiny_csv, "rocoft")
    facts = data_step_facts(recipe)
    assert 1 <= facts["tokens"] <= facts["peak_tokens"] <= recipe.data.max_length
    train = round(0.8 * 240)  # the 80/10/10 split of the 240 toy rows
    assert facts["steps"] == recipe.training.epochs * -(-train // recipe.training.batch_size)
    capped = recipe.model_copy(update={"training": recipe.training.model_copy(update={"max_steps": 7})})
    assert data_step_facts(capped)["steps"] == 7


def test_cli_plans_a_recipe_and_refuses_a_missing_one(tiny_model_folder, tiny_csv, tmp_path, capsys, monkeypatch):
    path = save_recipe(tiny_recipe(tiny_model_folder, tiny_csv, "lora"), tmp_path / "r.yaml")
    code, stdout, _ = run_cli(["plan", "--recipe", str(path), "--json"], capsys, monkeypatch)
    assert code == 0
    found = json.loads(stdout)
    assert set(found["flops"]) == {"forward", "activation grads", "weight grads"}
    assert found["settings"]["steps"] > 0 and found["this_machine"]["seconds"]["total"] > 0
    code, _, err = run_cli(["plan", "--recipe", str(tmp_path / "missing.yaml")], capsys, monkeypatch)
    assert_one_line_error(code, err, "missing.yaml")


def test_label_word_batches_count_the_prompt_tokens(tiny_llama_folder, tiny_csv):
    """A label-word step reads each text inside its template, so its batches are longer than the texts."""
    from ntk_advisor.recipe.io import parse_recipe
    from ntk_advisor.recipe.schema import SCHEMA_VERSION

    def recipe(task, **data):
        return parse_recipe({"schema_version": SCHEMA_VERSION, "model": {"name": str(tiny_llama_folder), "task": task},
                             "data": {"source": str(tiny_csv), "max_length": 30, **data}, "method": "lora",
                             "targets": [{"module": "model.layers.0.self_attn.q_proj", "rank": 2}]})

    plain = data_step_facts(recipe("classifier"))
    prompted = data_step_facts(recipe("label-words", template="Review : {text} Sentiment :",
                                      label_words=[" negative", " positive"]))
    assert prompted["tokens"] >= plain["tokens"] + 4  # "Review", ":", "Sentiment", ":"
    assert plan_step(recipe("label-words", template="Review : {text} Sentiment :",
                            label_words=[" negative", " positive"])).trainable > 0
