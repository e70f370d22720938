"""The label-words task: prompt a decoder LM and read the label words' next-token logits.

Each text goes into a template, and class c is a label word of one token (LM-BFF, Gao et al.
2021); f_c(x) = ⟨h_T(x), E_lm[w_c]⟩ at the prompt's last token. It is built as the model's
sequence-classification form whose C-row head is the LM head's rows of the label words, so
the 49k-way logits are never formed.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ModelError
from ..inputs.prompts import resolve_prompt
from .base import Task


class LabelWords(Task):
    name = "label-words"
    default_head = "label-words"
    export_formats = ("hf", "onnx", "hf-lm", "onnx-lm")  # -lm: the merged causal LM
    needs_label_names = True
    fits_probe_head = False  # θ0's head is the label words' rows

    def auto_for(self, bidirectional: bool) -> bool:
        return not bidirectional

    def refuses(self, model_type: str, bidirectional: bool) -> str | None:
        if bidirectional:
            return f"label-word prompting needs a decoder-only model; this one is {model_type}: use --task classifier"
        return None

    def prepare(self, loaded, *, template, label_words, label_names, num_labels: int) -> None:
        if loaded.tokenizer is None:
            raise ModelError("label-word prompting needs the tokenizer: load with with_tokenizer=True")
        loaded.prompt = resolve_prompt(loaded.tokenizer, template, label_words, label_names, num_labels)
        _init_label_word_head(loaded)

    def token_lengths(self, recipe, split, tokenizer) -> list[int]:
        from ..inputs.prompts import encode_prompts

        prompt = resolve_prompt(tokenizer, recipe.data.template, recipe.data.label_words, split.label_names,
                                recipe.model.num_labels)
        return encode_prompts(tokenizer, list(split.texts), prompt.template,
                              recipe.data.max_length)["attention_mask"].sum(1).tolist()

    def head_report(self, loaded, seed: int) -> dict:
        return {"kind": "label-words"}


@torch.no_grad()
def _init_label_word_head(loaded) -> None:
    """Head row c := the LM head's row of label word c (tied: the input embedding's row)."""
    backbone, ids = loaded.backbone, list(loaded.prompt.token_ids)
    if getattr(backbone.config, "tie_word_embeddings", False):
        rows = backbone.get_input_embeddings().weight[ids]
    else:
        from safetensors import safe_open

        rows = None
        for shard in sorted(Path(loaded.source).glob("*.safetensors")):
            with safe_open(str(shard), framework="pt") as f:
                if "lm_head.weight" in f.keys():
                    rows = f.get_slice("lm_head.weight")[:][ids]
        if rows is None:
            raise ModelError(f"no lm_head.weight in {loaded.source}: cannot initialize the label-word head")
    head = backbone.get_submodule(loaded.head_name)
    head.weight.copy_(rows.to(head.weight.dtype))
    if head.bias is not None:
        head.bias.zero_()
