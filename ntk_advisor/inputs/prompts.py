"""Classification as prompting with label words, for decoder-only LMs (LM-BFF, Gao et al. 2021).

A template such as ``"Review: {text}\\nSentiment:"`` turns each text into a prompt, and class
c is a label word w_c (``" negative"``, ``" positive"``) of exactly one token. The model's
output, for the NTK and for training alike, is the next-token logits of the label words at
the prompt's last token:

    f_c(x) = ⟨h_T(x), E_lm[w_c]⟩        h_T: final (normed) hidden state, E_lm: the LM head

ntk-advisor builds this as the model's sequence-classification form (the score head reads
h at the last non-pad token) with the score head's C rows set to the LM head's rows of the
label words (models.load_classifier). The full-vocabulary logits are never formed: the
Jacobian is taken of C outputs, not 49k.

Truncation cuts the text, never the template, so the prompt always ends with the template's
suffix and the answer position is its last token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import DataError

DEFAULT_TEMPLATE = "Text: {text}\nLabel:"
PLACEHOLDER = "{text}"


@dataclass(frozen=True)
class Prompt:
    template: str
    label_words: tuple[str, ...]
    token_ids: tuple[int, ...]  # the label words' single token ids, in class order

    def describe(self) -> str:
        words = ", ".join(repr(w) for w in self.label_words)
        return f"template {self.template!r}, label words {words}"


def check_template(template: str) -> tuple[str, str]:
    """(prefix, suffix) around the single {text}."""
    if template.count(PLACEHOLDER) != 1:
        raise DataError(f"the template {template!r} must contain {PLACEHOLDER} exactly once, where the text goes; "
                        f"for example 'Review: {{text}}\\nSentiment:'")
    prefix, suffix = template.split(PLACEHOLDER)
    if not suffix.strip():
        raise DataError(f"the template {template!r} ends with {PLACEHOLDER}: put a cue after it (like '\\nLabel:'), "
                        "the label word is predicted right after the template's last token")
    return prefix, suffix


def resolve_prompt(tokenizer, template: str | None, label_words: Sequence[str] | None,
                   label_names: Sequence[str] | None, num_classes: int) -> Prompt:
    """The template (default DEFAULT_TEMPLATE) and one single-token word per class (default: ' ' + name)."""
    template = template or DEFAULT_TEMPLATE
    check_template(template)
    if not label_words and label_names is None:
        raise DataError("label-word prompting needs label words, or the data set's label names to make them")
    words = tuple(label_words) if label_words else tuple(" " + str(name) for name in label_names)
    if len(words) != num_classes:
        names = f" ({', '.join(map(str, label_names))})" if label_names else ""
        raise DataError(f"{len(words)} label words for {num_classes} classes{names}: give one --label-word per "
                        "class, in label order")
    ids = []
    for word in words:
        pieces = tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(pieces) != 1:
            hint = "" if word.startswith(" ") else f"; a leading space often makes one token, try ' {word}'"
            raise DataError(f"label word {word!r} is {len(pieces)} tokens for this tokenizer, not 1: choose a "
                            f"single-token word{hint}")
        ids.append(pieces[0])
    if len(set(ids)) != len(ids):
        raise DataError(f"label words {words} do not map to distinct tokens: choose different words")
    return Prompt(template, words, tuple(ids))


def encode_prompts(tokenizer, texts: Sequence[str], template: str, max_length: int) -> dict[str, torch.Tensor]:
    """Token ids of ``template`` filled with each text, truncating the text to fit ``max_length``.

    Prefix, text and suffix are tokenized separately (so a cut never splits the suffix), the
    tokenizer's leading special tokens (a BOS, if it adds one) come first, and the batch is
    right-padded: the answer position is each row's last real token.
    """
    prefix, suffix = check_template(template)
    if prefix.endswith(" "):  # "Review: {text}": the space belongs to the text's first token, as in one string
        prefix, texts = prefix[:-1], [" " + text for text in texts]
    lead = tokenizer("", add_special_tokens=True)["input_ids"]
    head = lead + tokenizer(prefix, add_special_tokens=False)["input_ids"]
    tail = tokenizer(suffix, add_special_tokens=False)["input_ids"]
    room = max_length - len(head) - len(tail)
    if room < 1:
        raise DataError(f"the template takes {len(head) + len(tail)} tokens, which leaves no room for text within "
                        f"--max-length {max_length}: raise --max-length or shorten the template")
    bodies = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    rows = [head + body[:room] + tail for body in bodies]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention_mask[i, : len(row)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}
