"""Label-word prompting for decoder LMs: encoding, the label-word head, errors, and a short run."""

import json

import pytest
import torch

from ntk_advisor.errors import DataError, ModelError
from ntk_advisor.inputs import models
from ntk_advisor.inputs.prompts import encode_prompts
from ntk_advisor.tasks import load_task_model

NAMES = ("negative", "positive")


def test_label_word_logits_are_the_causal_lms_next_token_logits(tiny_llama_folder):
    """The oracle: the full causal LM's logits at the prompt's last token, gathered at the label words."""
    from transformers import AutoModelForCausalLM

    loaded = load_task_model(str(tiny_llama_folder), num_labels=2, dtype=torch.float64, task="auto",
                             template="Review: {text} Sentiment:", label_names=NAMES)
    assert loaded.prompt.label_words == (" negative", " positive") and loaded.head_name == "score"
    lm = AutoModelForCausalLM.from_pretrained(tiny_llama_folder, dtype=torch.float64, attn_implementation="eager")
    batch = loaded.encode(["good fun film", "a very dull and poor plot of the movie", "bad"], 64)
    with torch.no_grad():
        got = loaded.logits_model(**batch)
        full = lm(**batch).logits
    last = batch["attention_mask"].sum(1) - 1
    expected = full[torch.arange(3), last][:, list(loaded.prompt.token_ids)]
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_truncation_cuts_the_text_and_keeps_the_template(tiny_llama_folder):
    tokenizer = models.load_tokenizer(str(tiny_llama_folder))
    long_text = " ".join(["good"] * 50)
    batch = encode_prompts(tokenizer, [long_text, "bad"], "Review: {text} Sentiment:", 12)
    ids = batch["input_ids"]
    assert ids.shape == (2, 12) and batch["attention_mask"][0].sum() == 12
    vocab = tokenizer.get_vocab()
    assert ids[0, :2].tolist() == [vocab["Review"], vocab[":"]]
    for row, length in zip(ids, batch["attention_mask"].sum(1)):
        assert row[length - 2 : length].tolist() == [vocab["Sentiment"], vocab[":"]]  # the answer cue is last
    assert batch["attention_mask"][1].tolist() == [1] * 5 + [0] * 7  # Review : bad Sentiment : then padding


@pytest.mark.parametrize("template,words,max_length,error,pattern", [
    ("Review: {txt} Sentiment:", None, 32, DataError, r"must contain \{text\} exactly once"),
    ("Sentiment: {text}", None, 32, DataError, r"ends with \{text\}"),
    ("Review: {text} Sentiment:", ("good bad", "fun"), 32, DataError, r"'good bad' is 2 tokens.*leading space"),
    ("Review: {text} Sentiment:", (" good",), 32, DataError, r"1 label words for 2 classes"),
    ("Review: {text} Sentiment:", (" good", " good"), 32, DataError, r"distinct"),
    ("Review: Review: Review: {text} Sentiment:", None, 6, DataError, r"no room for text.*--max-length 6"),
])
def test_bad_prompts_get_clear_errors(tiny_llama_folder, template, words, max_length, error, pattern):
    with pytest.raises(error, match=pattern):
        loaded = load_task_model(str(tiny_llama_folder), num_labels=2, task="label-words", template=template,
                                 label_words=words, label_names=NAMES)
        loaded.encode(["good film"], max_length)


def test_label_words_need_a_decoder(tiny_model_folder):
    with pytest.raises(ModelError, match="decoder-only"):
        load_task_model(str(tiny_model_folder), num_labels=2, task="label-words", label_names=NAMES)


def test_prompted_profile_recommend_train_export(tiny_llama_folder, tiny_csv, tmp_path):
    """auto picks prompting for a decoder; the recipe carries the prompt to train and export."""
    from ntk_advisor.advice.recommend import RecommendConfig, recommend
    from ntk_advisor.exporting.export import export
    from ntk_advisor.profiling.folder import save_profile
    from ntk_advisor.profiling.profiler import ProfileConfig, profile
    from ntk_advisor.recipe.io import load_recipe
    from ntk_advisor.training.loop import train

    result = profile(ProfileConfig(model=str(tiny_llama_folder), data=str(tiny_csv), samples=8, max_length=16,
                                   template="Review: {text} Sentiment:", label_words=(" negative", " positive")))
    assert result.head_report["kind"] == "label-words" and 0 <= result.head_report["validation_accuracy"] <= 1
    assert result.settings["prompt"]["label_words"] == [" negative", " positive"]
    folder = save_profile(result, tmp_path / "profile")
    recipe = recommend(folder, RecommendConfig(budget=200, training={"max_steps": 2, "batch_size": 8}))
    assert recipe.model.task == "label-words" and recipe.data.template == "Review: {text} Sentiment:"
    run = train(recipe, tmp_path / "run")
    assert run.metrics["steps"] == 2
    assert load_recipe(tmp_path / "run" / "recipe.yaml").data.label_words == recipe.data.label_words
    exported = export(tmp_path / "run", "hf", tmp_path / "hf")
    report = json.loads((exported.out / "export_report.json").read_text())
    assert report["prompt"]["template"] == "Review: {text} Sentiment:"
    # The causal LM export: its next-token logits of the label words are the classifier's logits.
    from transformers import AutoModelForCausalLM

    from ntk_advisor.exporting.export import merged_model

    export(tmp_path / "run", "hf-lm", tmp_path / "lm")
    lm = AutoModelForCausalLM.from_pretrained(tmp_path / "lm", attn_implementation="eager").eval()
    classifier, loaded = merged_model(tmp_path / "run")
    batch = loaded.encode(["good fun film", "a dull plot"], 16)
    with torch.no_grad():
        expected = models.SequenceLogits(classifier)(**batch)
        full = lm(**batch).logits
    last = batch["attention_mask"].sum(1) - 1
    assert torch.allclose(full[torch.arange(2), last][:, list(loaded.prompt.token_ids)], expected, atol=1e-5)
    assert not torch.equal(lm.get_output_embeddings().weight, lm.get_input_embeddings().weight)  # untied
    onnx = export(tmp_path / "run", "onnx-lm", tmp_path / "onnx")
    assert onnx.max_abs_logit_difference <= 1e-3


@pytest.mark.slow
def test_real_smollm2_prompted_profile_and_a_few_training_steps(tmp_path):
    """Real SmolLM2-135M on real vader-movie sentences (a small file, so evaluation is quick)."""
    from transformers import AutoModelForCausalLM

    from ntk_advisor.advice.recommend import RecommendConfig, recommend
    from ntk_advisor.inputs import data as data_lib
    from ntk_advisor.profiling.folder import save_profile
    from ntk_advisor.profiling.profiler import ProfileConfig, profile
    from ntk_advisor.training.loop import train

    vader = data_lib.load_dataset("vader-movie")
    picks = list(range(0, len(vader), len(vader) // 100))[:100]  # both classes (the file is sorted by label)
    rows = ["text\tlabel"] + [f"{vader.texts[i]}\t{vader.label_names[vader.labels[i]]}" for i in picks]
    (tmp_path / "reviews.tsv").write_text("\n".join(rows) + "\n")
    modules = ("model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj", "model.layers.29.mlp.down_proj",
               "score")
    result = profile(ProfileConfig(model="smollm2-135m", data=str(tmp_path / "reviews.tsv"), samples=8, max_length=32,
                                   modules=modules))
    assert result.settings["prompt"] == {"template": "Text: {text}\nLabel:", "label_words": [" negative", " positive"]}
    assert result.head_report["kind"] == "label-words" and result.head_report["validation_examples"] == 10
    # The head is the LM head: the profiled logits are SmolLM2's own next-token logits of the words.
    loaded = load_task_model("smollm2-135m", 2, task="auto", label_names=("negative", "positive"))
    lm = AutoModelForCausalLM.from_pretrained(loaded.source, attn_implementation="eager")
    batch = {k: result.inputs[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        got, full = loaded.logits_model(**batch), lm(**batch).logits
    last = batch["attention_mask"].sum(1) - 1
    assert torch.allclose(got, full[torch.arange(8), last][:, list(loaded.prompt.token_ids)], atol=1e-3)
    folder = save_profile(result, tmp_path / "profile")
    recipe = recommend(folder, RecommendConfig(budget=6000, training={"max_steps": 3, "batch_size": 4}))
    run = train(recipe, tmp_path / "run")
    assert run.metrics["steps"] == 3 and run.metrics["trainable_parameters"] <= 6000
    assert 0.0 <= run.metrics["test"]["accuracy"] <= 1.0 and run.metrics["test"]["examples"] >= 10
