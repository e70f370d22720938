"""Supervised fine-tuning, first part: the data formats, the completion mask, and the kernel of
a generative model (f_n = completion log-likelihood) against its brute-force twins."""

from __future__ import annotations

import json

import pytest
import torch

from ntk_advisor.errors import DataError
from ntk_advisor.inputs.completions import (
    bbc_headlines,
    encode_completions,
    load_completions,
)
from ntk_advisor.inputs.dataset import split_dataset
from ntk_advisor.inputs.models import discover_targets
from ntk_advisor.ntk import (
    OutputSpec,
    jacobian_kernels,
    label_gradient_scores,
    structured_kernels,
)
from ntk_advisor.tasks.completion import CompletionLogLikelihood

PAIRS = [("Review : good film", " positive"), ("Review : the plot was very dull and not fun", " negative"),
         ("Text : a", " great movie so fun"), ("Review : awful", " negative"), ("Text : fine", " fine film")]


@pytest.fixture(scope="module")
def llama(tiny_llama_folder):
    import transformers as tf

    model = tf.AutoModelForCausalLM.from_pretrained(tiny_llama_folder).double().eval()
    tokenizer = tf.AutoTokenizer.from_pretrained(tiny_llama_folder)
    return model, tokenizer


def _inputs(tokenizer, pairs=PAIRS, max_length=32):
    return encode_completions(tokenizer, [p for p, _ in pairs], [c for _, c in pairs], max_length)


def test_completion_mask_marks_exactly_the_completion_tokens(llama):
    _, tokenizer = llama
    batch = _inputs(tokenizer)
    for n, (prompt, completion) in enumerate(PAIRS):
        prompt_ids = tokenizer(prompt)["input_ids"]
        completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
        length = len(prompt_ids) + len(completion_ids)
        assert batch["input_ids"][n, :length].tolist() == prompt_ids + completion_ids
        assert batch["completion_mask"][n].tolist() == [0] * len(prompt_ids) + [1] * len(completion_ids) + \
            [0] * (batch["input_ids"].shape[1] - length)
        assert int(batch["attention_mask"][n].sum()) == length
    cut = _inputs(tokenizer, max_length=5)
    assert cut["input_ids"].shape[1] == 5 and int(cut["completion_mask"][1].sum()) == 0  # a long prompt fills it
    with pytest.raises(DataError, match="no completion token is left within --max-length 2"):
        _inputs(tokenizer, pairs=PAIRS[1:2], max_length=2)


def test_f_is_minus_the_completion_only_cross_entropy(llama):
    model, tokenizer = llama
    batch = _inputs(tokenizer)
    f = CompletionLogLikelihood(model)(**batch)
    assert f.shape == (len(PAIRS), 1)
    for n in range(len(PAIRS)):
        length = int(batch["attention_mask"][n].sum())
        ids = batch["input_ids"][n:n + 1, :length]
        labels = torch.where(batch["completion_mask"][n:n + 1, :length].bool(), ids, -100)
        out = model(input_ids=ids, labels=labels)  # HF shifts the labels and averages over the kept tokens
        tokens = int((labels[:, 1:] != -100).sum())
        # HF computes its loss in float32, whatever the logits' dtype: compare at float32's precision
        torch.testing.assert_close(f[n, 0], -out.loss.double() * tokens, rtol=1e-6, atol=1e-6)
        alone = CompletionLogLikelihood(model)(**{k: v[n:n + 1, :length] for k, v in batch.items()})
        torch.testing.assert_close(f[n], alone[0], rtol=1e-10, atol=1e-10)  # padding changes nothing


def test_generative_kernel_matches_vmap_jacrev(llama):
    model, tokenizer = llama
    wrapper = CompletionLogLikelihood(model)
    batch = _inputs(tokenizer)
    spec = OutputSpec("trace", 1, torch.zeros(len(PAIRS), dtype=torch.long))
    # The tiny Llama ties lm_head to the embedding: a Jacobian of that one tensor would also
    # differentiate its use as the embedding, which an adapter on the head Linear never changes.
    targets = [t for t in discover_targets(model) if t.role != "head"]
    assert {t.role for t in targets} >= {"query", "value", "ffn-in", "ffn-out"}
    fast = structured_kernels(wrapper, batch, {"backbone." + t.name: model.get_submodule(t.name) for t in targets},
                              spec)
    slow = jacobian_kernels(wrapper, batch, {"backbone." + t.name: ("backbone." + t.name + ".weight", t.transposed)
                                             for t in targets}, spec)
    for name, reference in slow.items():
        assert float(reference.kernel.norm()) > 0, name
        torch.testing.assert_close(fast[name].kernel, reference.kernel, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(fast[name].row_energy, reference.row_energy, rtol=1e-10, atol=1e-12)
        kernel = fast[name].kernel
        assert torch.allclose(kernel, kernel.T) and float(torch.linalg.eigvalsh(kernel).min()) > -1e-10
        # the row energies sum to the kernel's trace: Σ_i ‖g_n[i, :]‖² over n is Σ_n K[n, n]
        torch.testing.assert_close(fast[name].row_energy.sum(), kernel.trace(), rtol=1e-10, atol=1e-12)


def test_sft_gradient_scores_are_the_rows_of_the_mean_loglikelihood_gradient(llama):
    model, tokenizer = llama
    wrapper = CompletionLogLikelihood(model)
    batch = _inputs(tokenizer)
    targets = [t for t in discover_targets(model) if t.role in ("value", "ffn-out")]
    weights = {"backbone." + t.name: (wrapper.get_submodule("backbone." + t.name).weight, t.transposed)
               for t in targets}
    ones = torch.ones(len(PAIRS), 1, dtype=torch.float64)
    found = label_gradient_scores(wrapper, [(batch, ones)], weights, lambda outputs: outputs, len(PAIRS))
    parameters = [weights[name][0] for name in weights]
    gradients = torch.autograd.grad(wrapper(**batch).mean(), parameters)
    # Llama's RMSNorm computes in float32 even in a float64 model, so two equal backward passes
    # (of Σ f / M and of mean f) agree only to float32's precision (1.4e-7 measured).
    for (name, _), gradient in zip(weights.items(), gradients):
        torch.testing.assert_close(found[name].rows, gradient.square().sum(1), rtol=1e-5, atol=1e-12)
        torch.testing.assert_close(found[name].spectrum.sum(), found[name].rows.sum(), rtol=1e-10, atol=1e-14)


def test_the_three_data_formats(llama, tmp_path):
    _, tokenizer = llama
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": p, "completion": c, "label": c.strip()}) + "\n" for p, c in PAIRS))
    found = load_completions(str(pairs))
    assert list(zip(found.texts, found.completions)) == PAIRS
    assert found.label_names == ("fine film", "great movie so fun", "negative", "positive")
    text = tmp_path / "text.csv"
    text.write_text("text\ngood film\nawful plot\n")
    plain = load_completions(str(text))
    assert plain.texts == ("", "") and plain.completions == ("good film", "awful plot") and plain.num_classes == 1
    tokenizer.chat_template = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
                               "{% if add_generation_prompt %}assistant :{% endif %}")
    tokenizer.eos_token = "<pad>"
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "good film"},
                                             {"role": "assistant", "content": " positive"}]}) + "\n")
    conversation = load_completions(str(chat), tokenizer)
    assert conversation.texts == ("user : good film assistant :",)
    assert conversation.completions == (" positive<pad>",)


@pytest.mark.parametrize("record, message", [
    ({"question": "x"}, "reads 'prompt' and 'completion', 'messages'"),
    ({"prompt": "a", "completion": ""}, "line 1 has no completion text"),
    ({"messages": [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "?"}]},
     "ends with a 'user' turn"),
    ({"messages": "hello"}, "is not a conversation"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, "has no chat template"),
    ({"prompt": [{"role": "user", "content": "a"}], "completion": "b"}, "mixes a conversation and plain text"),
])
def test_bad_sft_records_are_clear_errors(tmp_path, record, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(DataError, match=message):
        load_completions(str(path))


def test_bbc_headlines_pairs_and_stratified_splits():
    pairs = bbc_headlines()
    assert len(pairs) == 2225 and pairs.num_classes == 5
    assert pairs.texts[0].startswith("Quarterly profits at US media giant TimeWarner jumped 76%")
    assert pairs.texts[0].endswith("\nHeadline:") and pairs.completions[0] == " Ad sales boost Time Warner profit"
    splits = split_dataset(pairs, seed=0)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (1779, 223, 223)
    originals = set(zip(pairs.texts, pairs.completions))  # (some BBC leads repeat under other headlines)
    assert all(pair in originals for pair in zip(splits.test.texts, splits.test.completions))  # pairs stay together
    assert all(count > 0 for count in splits.test.label_counts().values())


def test_profile_of_a_causal_lm_for_sft(llama, tiny_llama_folder, tmp_path):
    from ntk_advisor.profiling.folder import load_profile, save_profile
    from ntk_advisor.profiling.profiler import ProfileConfig, profile

    model, tokenizer = llama
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in PAIRS * 8))
    result = profile(ProfileConfig(model=str(tiny_llama_folder), data=str(data), task="sft", samples=6,
                                   max_length=16, signal_samples=20, dtype="float64", device="cpu"))
    folder = save_profile(result, tmp_path / "profile")
    again = load_profile(folder)
    assert again.settings["task"] == "sft" and again.settings["num_outputs"] == 1
    names = again.settings["modules"]
    assert names and not any(n.endswith("lm_head") for n in names)  # the head only when --module names it
    assert set(again.scores["rows_signal"]) == set(names)
    # the profile's kernels are the generative kernel of its own stored inputs (the model loaded as the
    # profile loads it: built in float64, RoPE's frequencies differ from a float32 model cast by 1e-7)
    from ntk_advisor.inputs.models import load_causal_lm

    model, _ = load_causal_lm(str(tiny_llama_folder), dtype=torch.float64)
    wrapper = CompletionLogLikelihood(model)
    inputs = {k: again.inputs[k] for k in ("input_ids", "attention_mask", "completion_mask")}
    target = next(t for t in discover_targets(model) if t.name == names[0])
    reference = jacobian_kernels(wrapper, inputs, {"backbone." + target.name: ("backbone." + target.name + ".weight",
                                                                                 target.transposed)},
                                 OutputSpec("trace", 1, torch.zeros(6, dtype=torch.long)))
    # 1e-10 is the oracle test's (above); through the whole profile (length buckets, eager attention) the float32
    # parts of Llama (RMSNorm, RoPE) round differently and agree to 2.6e-7 here
    torch.testing.assert_close(again.kernels[names[0]], reference["backbone." + target.name].kernel, rtol=1e-5,
                               atol=1e-9)
    assert all(m.alignment != m.alignment for m in again.modules)  # NaN: no labels
