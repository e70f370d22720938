"""Model loading, the logits wrapper and target discovery."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from conftest import tiny_batch, tiny_classifier

from ntk_advisor.errors import ModelError
from ntk_advisor.inputs.head_features import head_inputs
from ntk_advisor.inputs.models import (
    additive_mask,
    discover_targets,
    encode,
    length_batches,
    load_classifier,
    resolve_model_source,
    weight_matrix,
)


@pytest.mark.parametrize(
    "arch,expected",
    [
        ("bert", {"query": 2, "key": 2, "value": 2, "attention-out": 2, "ffn-in": 2, "ffn-out": 2, "pooler": 1, "head": 1}),
        ("gpt2", {"qkv": 2, "attention-out": 2, "ffn-in": 2, "ffn-out": 2, "head": 1}),
        ("llama", {"query": 2, "key": 2, "value": 2, "attention-out": 2, "ffn-in": 4, "ffn-out": 2, "head": 1}),
    ],
)
def test_discover_targets_roles_and_shapes(arch, expected):
    loaded = tiny_classifier(arch)
    targets = discover_targets(loaded.backbone)
    assert Counter(t.role for t in targets) == Counter(expected)
    for t in targets:
        assert tuple(weight_matrix(loaded.backbone, t).shape) == (t.d_out, t.d_in)
        assert (t.layer is None) == (t.role in ("pooler", "head"))
    if arch == "gpt2":
        c_attn = next(t for t in targets if t.role == "qkv")
        assert c_attn.transposed and (c_attn.d_out, c_attn.d_in) == (48, 16)  # Conv1D [16, 48] stored
    assert loaded.head_name == ("classifier" if arch == "bert" else "score")


def test_additive_mask_semantics():
    mask = torch.tensor([[1, 1, 0]])
    enc = additive_mask(mask, causal=False, dtype=torch.float32)
    dec = additive_mask(mask, causal=True, dtype=torch.float32)
    assert enc.shape == dec.shape == (1, 1, 3, 3)
    keep_enc, keep_dec = enc[0, 0] == 0, dec[0, 0] == 0
    assert keep_enc.tolist() == [[True, True, False]] * 3
    assert keep_dec.tolist() == [[True, False, False], [True, True, False], [True, True, False]]


@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama"])
def test_wrapper_matches_library_mask_path(arch):
    loaded = tiny_classifier(arch)
    batch = tiny_batch()
    ours = loaded.logits_model(**batch)
    theirs = loaded.backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(ours, theirs, atol=1e-10)


def test_encode_truncates_and_rejects_bad_length():
    loaded = tiny_classifier("bert")
    batch = encode(loaded.tokenizer, ["a b c d e f", "a"], max_length=4)
    assert batch["input_ids"].shape == (2, 4) and batch["attention_mask"].sum(1).tolist() == [4, 1]
    with pytest.raises(ModelError, match="at least 1"):
        encode(loaded.tokenizer, ["a"], max_length=0)


def test_model_source_errors(tmp_path):
    with pytest.raises(ModelError, match="unknown model 'nonsense'.*minilm-l6"):
        resolve_model_source("nonsense")
    with pytest.raises(ModelError, match="not a Hugging Face model folder"):
        resolve_model_source(str(tmp_path))
    with pytest.raises(ModelError, match="could not load model 'no-such-org/no-such-model'.*local folder"):
        load_classifier("no-such-org/no-such-model", num_labels=2)


def test_linear_free_model_is_refused():
    with pytest.raises(ModelError, match="no Linear"):
        discover_targets(torch.nn.Sequential(torch.nn.ReLU()))


@pytest.mark.slow
def test_real_minilm_l6_structure():
    loaded = load_classifier("minilm-l6", num_labels=2)
    targets = discover_targets(loaded.backbone)
    assert len(targets) == 38 and loaded.backbone.config.num_hidden_layers == 6
    roles = Counter(t.role for t in targets)
    assert roles == {"query": 6, "key": 6, "value": 6, "attention-out": 6, "ffn-in": 6, "ffn-out": 6, "pooler": 1,
                     "head": 1}
    assert set(loaded.new_parameter_names) == {"classifier.weight", "classifier.bias"}
    batch = encode(loaded.tokenizer, ["a wonderful film", "dull and far too long"], max_length=16)
    assert loaded.logits_model(**batch).shape == (2, 2)


@pytest.mark.slow
def test_real_smollm2_alias_is_cached_and_sane():
    """Dequantized once from GGUF (20-30 s), then a plain HF folder; it still knows Paris."""
    from transformers import AutoModelForCausalLM

    from ntk_advisor.inputs.models import resolve_model_source

    folder = resolve_model_source("smollm2-135m")
    lm = AutoModelForCausalLM.from_pretrained(folder).eval()
    classifier = load_classifier("smollm2-135m", num_labels=2)
    assert len(discover_targets(classifier.backbone)) == 30 * 7 + 1
    assert sum(p.numel() for p in lm.parameters()) == 134_515_008
    batch = classifier.tokenizer(["The capital of France is"], return_tensors="pt")
    with torch.no_grad():
        next_token = lm(**batch).logits[0, -1].argmax()
    assert classifier.tokenizer.decode(next_token).strip() == "Paris"


def test_length_batches_cover_every_index_once_in_length_order():
    texts = ["a" * n for n in (9, 1, 5, 30, 2, 2, 17)]
    batches = length_batches(texts, 3)
    assert sorted(i for b in batches for i in b) == list(range(len(texts)))
    assert [len(b) for b in batches] == [3, 3, 1]
    lengths = [len(texts[i]) for b in batches for i in b]
    assert lengths == sorted(lengths)


def test_head_inputs_keep_text_order_and_do_not_depend_on_padding(tiny_model_folder):
    from conftest import WORDS

    loaded = load_classifier(str(tiny_model_folder), num_labels=2, dtype=torch.float64)
    texts = [" ".join(WORDS[: 1 + (7 * i) % len(WORDS)]) for i in range(11)]  # lengths 1..len(WORDS), shuffled
    got = head_inputs(loaded, texts, 32, batch_size=4)
    alone = torch.cat([head_inputs(loaded, [text], 32) for text in texts])  # no padding at all
    assert got.shape == alone.shape
    assert torch.allclose(got, alone, rtol=1e-10, atol=1e-12)


def test_head_inputs_of_a_decoder_are_its_pooled_token(tiny_llama_folder):
    """A decoder's sequence-classification head scores every token and returns the last
    non-padding one's logits; the probe must be fitted on that token's features alone."""
    from conftest import PROMPT_WORDS

    loaded = load_classifier(str(tiny_llama_folder), num_labels=2, dtype=torch.float64)
    words = [w for w in PROMPT_WORDS if not w.startswith("<")]
    texts = [" ".join(words[: 1 + (5 * i) % 6]) for i in range(7)]  # uneven lengths: padded batches
    got = head_inputs(loaded, texts, 16, batch_size=3)
    head = loaded.backbone.get_submodule(loaded.head_name)
    for i, text in enumerate(texts):  # the logits transformers returns come from exactly these features
        batch = encode(loaded.tokenizer, [text], 16)
        logits = loaded.backbone(**batch).logits[0]
        assert torch.allclose(head(got[i]), logits, rtol=1e-10, atol=1e-12)
    assert got.shape == (len(texts), head.weight.shape[1])
