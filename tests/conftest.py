"""Shared fixtures: tiny random-init BERT, GPT-2 and Llama twins (2 layers) for mechanics tests.

Real-model tests are marked ``slow`` and load minilm-l6 / vader-movie from the installed wheels.
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("COLUMNS", "200")  # rich wraps at the terminal width; pin it for assertions

VOCAB = 50


class TinyTokenizer:
    """Whitespace tokenizer over a fixed vocabulary, enough for the encode() contract."""

    pad_token = "[PAD]"
    eos_token = "[PAD]"
    pad_token_id = 0

    def __call__(self, texts, truncation=True, max_length=16, padding="longest", return_tensors="pt"):
        ids = [[1 + (sum(map(ord, w)) % (VOCAB - 1)) for w in t.split()][:max_length] or [1] for t in texts]
        width = max(len(i) for i in ids)
        return {
            "input_ids": torch.tensor([i + [0] * (width - len(i)) for i in ids]),
            "attention_mask": torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids]),
        }


def tiny_classifier(arch: str, num_labels: int = 2, dtype=torch.float64, seed: int = 0):
    import transformers as tf

    from ntk_advisor.inputs.models import wrap_classifier

    torch.manual_seed(seed)
    common = dict(vocab_size=VOCAB, num_labels=num_labels, pad_token_id=0)
    if arch == "bert":
        config = tf.BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
                               max_position_embeddings=64, **common)
        model = tf.BertForSequenceClassification(config)
    elif arch == "gpt2":
        config = tf.GPT2Config(n_embd=16, n_layer=2, n_head=2, n_positions=64, bos_token_id=1, eos_token_id=1, **common)
        model = tf.GPT2ForSequenceClassification(config)
    elif arch == "llama":
        config = tf.LlamaConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                intermediate_size=24, max_position_embeddings=64, **common)
        model = tf.LlamaForSequenceClassification(config)
    else:
        raise ValueError(arch)
    config._attn_implementation = "eager"
    model = model.to(dtype)
    head = "classifier" if arch == "bert" else "score"
    return wrap_classifier(model, TinyTokenizer(), new_parameter_names=[f"{head}.weight"])


@pytest.fixture(params=["bert", "gpt2", "llama"])
def tiny_model(request):
    return tiny_classifier(request.param)


def tiny_batch(n: int = 6, t: int = 7, seed: int = 0, ragged: bool = True):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (n, t), generator=g)
    mask = torch.ones(n, t, dtype=torch.long)
    if ragged:
        for i in range(n):
            length = 2 + (i * 3) % (t - 1)
            mask[i, length:] = 0
            ids[i, length:] = 0
    return {"input_ids": ids, "attention_mask": mask}


WORDS = ["good", "great", "fine", "fun", "bad", "awful", "dull", "poor", "movie", "film", "plot", "the", "a", "very",
         "not", "so"]


TINY_LABELS = torch.tensor([0, 1, 0, 1, 1, 0])  # of tiny_batch()'s six examples


@pytest.fixture(scope="session")
def tiny_profile_dir(tmp_path_factory):
    """A tiny BERT saved as a HF folder, profiled on tiny_batch() in float64: recommend must
    rebuild it from the folder."""
    from ntk_advisor.profiling.folder import save_profile
    from ntk_advisor.profiling.profiler import ProfileConfig, profile_model

    root = tmp_path_factory.mktemp("tiny-profile")
    loaded = tiny_classifier("bert")
    loaded.backbone.save_pretrained(root / "model")
    config = ProfileConfig(model=str(root / "model"), data="tiny", samples=6, max_length=7, dtype="float64")
    return save_profile(profile_model(loaded, tiny_batch(), TINY_LABELS, config, lambda *a: None), root / "profile")


@pytest.fixture(scope="session")
def tiny_model_folder(tmp_path_factory):
    """A tiny random-init BERT classifier saved with a real WordPiece tokenizer, loadable by path."""
    import transformers as tf

    root = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # transformers 5 ignores vocab_file= here (every word became [UNK]); pass the vocabulary itself.
    tokenizer = tf.BertTokenizerFast(vocab={word: i for i, word in enumerate(vocab)})
    torch.manual_seed(0)
    config = tf.BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=24, max_position_embeddings=64, num_labels=2, pad_token_id=0)
    tf.BertForSequenceClassification(config).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    return root / "model"


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory):
    """A learnable toy sentiment set: positive words -> 1, negative words -> 0."""
    import random

    rng = random.Random(0)
    rows = ["text,label"]
    for i in range(240):
        label = i % 2
        words = rng.sample(WORDS[:4] if label else WORDS[4:8], 2) + rng.sample(WORDS[8:], 3)
        rng.shuffle(words)
        rows.append(f"{' '.join(words)},{label}")
    path = tmp_path_factory.mktemp("tiny-data") / "toy.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


PROMPT_WORDS = ["<pad>", "<unk>", "Text", ":", "Label", "Review", "Sentiment", "positive", "negative"] + WORDS


@pytest.fixture(scope="session")
def tiny_llama_folder(tmp_path_factory):
    """A tiny random-init Llama *causal LM* (tied embeddings) with a word-level fast tokenizer:
    the mechanics of label-word prompting without the real 135M model."""
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers

    root = tmp_path_factory.mktemp("tiny-llama") / "model"
    vocab = {word: i for i, word in enumerate(PROMPT_WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = tf.PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>")
    torch.manual_seed(0)
    config = tf.LlamaConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                            num_key_value_heads=1, intermediate_size=24, max_position_embeddings=64, pad_token_id=0,
                            tie_word_embeddings=True, initializer_range=0.3)
    tf.LlamaForCausalLM(config).save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root
