"""The sft task: supervised fine-tuning of a causal LM on completions (docs/sft.md).

The model's output for the kernel is each example's completion log-likelihood f_n
(tasks/completion.py); the loss is the mean negative log-likelihood per completion token,
−Σ_n f_n / Σ_n |completion_n|, as TRL's SFTTrainer averages it with ``completion_only_loss``.
A run keeps its best state by validation NLL, and reports test NLL, perplexity exp(NLL),
greedy exact match on short completions, a few generations, and forgetting: the NLL of text
the run did not train on (``data.heldout_text``), at θ0 and after training.
"""

from __future__ import annotations

import math

import torch

from ..errors import DataError, ModelError, TrainError
from ..inputs import models
from ..inputs.completions import encode_completions, heldout_default, load_completions
from .base import Task
from .completion import CompletionLogLikelihood

EVAL_BATCH = 16
GENERATED = 32  # test examples whose completion is generated greedily (exact match)
SHOWN = 8  # of them, written to the run folder's generations.jsonl
HELDOUT = 64  # held-out texts scored for forgetting
LONGEST_GENERATED = 48  # completion tokens: exact match is for short completions


class SupervisedFineTuning(Task):
    name = "sft"
    default_head = "none"
    fits_probe_head = False
    exports_vocabulary_logits = True
    selects_by = ("nll", -1)
    labelled = False
    peft_task_type = "CAUSAL_LM"  # what TRL's SFTTrainer and get_peft_model wrap a causal LM as
    references_rerun_capture = False

    def auto_for(self, bidirectional: bool) -> bool:
        return False  # never chosen by --task auto: the data format decides, and the user says so

    def refuses(self, model_type: str, bidirectional: bool) -> str | None:
        if bidirectional:
            return f"supervised fine-tuning trains a causal LM; {model_type} is bidirectional: use a decoder-only model"
        return None

    def load_model(self, name: str, dtype: torch.dtype) -> models.LoadedModel:
        lm, tokenizer = models.load_causal_lm(name, dtype=dtype)
        problem = self.refuses(lm.config.model_type, models.is_bidirectional(lm.config))
        if problem:
            raise ModelError(problem)
        return models.LoadedModel(models.resolve_model_source(name), CompletionLogLikelihood(lm), tokenizer, (), None,
                                  task=self.name)

    def meta_model(self, name: str, num_labels: int, dtype: torch.dtype):
        return models.meta_classifier(name, num_labels, dtype=dtype, causal=True), None

    def read_data(self, recipe):
        tokenizer = models.load_tokenizer(models.resolve_model_source(recipe.model.name))
        dataset = load_completions(recipe.data.source, tokenizer)
        check_room(tokenizer, dataset, recipe.data.max_length, TrainError)
        return dataset

    def token_lengths(self, recipe, split, tokenizer) -> list[int]:
        return [int(encode_completions(tokenizer, [p], [c], recipe.data.max_length, False)["attention_mask"].sum())
                for p, c in zip(split.texts, split.completions)]

    def profiled_dataset(self, settings: dict):
        return load_completions(settings["data"], models.load_tokenizer(models.resolve_model_source(settings["model"])))

    def heldout_text(self, data: str) -> str | None:
        return heldout_default(data)

    def outputs_model(self, backbone: torch.nn.Module) -> torch.nn.Module:
        return CompletionLogLikelihood(backbone)

    def batch(self, loaded, split, indices, max_length: int) -> tuple[dict, torch.Tensor]:
        """Inputs with the completion mask; the target is the batch's completion-token count."""
        inputs = encode_completions(loaded.tokenizer, [split.texts[i] for i in indices],
                                    [split.completions[i] for i in indices], max_length, require_completion=False)
        inputs = {k: v.to(loaded.device) for k, v in inputs.items()}
        return inputs, inputs["completion_mask"][:, 1:].sum()

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Mean NLL per completion token (``sum``: the total), from (N, 1) log-likelihoods."""
        total = -outputs.sum()
        return total if reduction == "sum" else total / targets.clamp_min(1)

    @torch.no_grad()
    def evaluate(self, logits_model, loaded, split, max_length: int, batch_size: int = EVAL_BATCH) -> dict:
        """Completion NLL per token and perplexity of ``split`` (eval mode)."""
        logits_model.eval()
        total, tokens = 0.0, 0
        lengths = [p + c for p, c in zip(split.texts, split.completions)]
        for group in models.length_batches(lengths, batch_size):
            inputs, count = self.batch(loaded, split, group, max_length)
            total += float(self.loss(logits_model(**inputs), count, reduction="sum"))
            tokens += int(count)
        nll = total / tokens if tokens else math.nan
        return {"nll": nll, "perplexity": math.exp(nll) if tokens else math.nan, "loss": nll,
                "examples": len(split), "completion_tokens": tokens}

    def at_theta0(self, outputs_model, loaded, recipe) -> dict:
        source = recipe.data.heldout_text
        if not source:
            return {}
        texts = heldout_texts(source, loaded.tokenizer)
        return {"heldout_nll": heldout_nll(outputs_model, loaded, texts, recipe.data.max_length)}

    def after_training(self, outputs_model, loaded, splits, recipe, at_theta0: dict) -> dict:
        backbone = getattr(outputs_model, "module", outputs_model).backbone
        found = greedy_exact_match(backbone, loaded.tokenizer, splits.test, recipe.data.max_length)
        if "heldout_nll" in at_theta0:
            texts = heldout_texts(recipe.data.heldout_text, loaded.tokenizer)
            after = heldout_nll(outputs_model, loaded, texts, recipe.data.max_length)
            found["forgetting"] = {"source": recipe.data.heldout_text, "texts": len(texts),
                                   "nll_theta0": at_theta0["heldout_nll"], "nll_after": after,
                                   "increase": after - at_theta0["heldout_nll"]}
        return found


def check_room(tokenizer, dataset, max_length: int, error=DataError) -> int:
    """How many examples keep no completion token within ``max_length`` (their prompt fills
    it); refuses when all do, so a run never trains on nothing."""
    cut = 0
    for prompt, completion in zip(dataset.texts, dataset.completions):
        head = len(tokenizer(prompt, add_special_tokens=True)["input_ids"]) if prompt else 1
        cut += head >= max_length
    if cut == len(dataset):
        raise error(f"every one of the {len(dataset)} prompts fills max length {max_length} tokens, so no completion "
                    "token is left to train on: raise data.max_length (--max-length) or shorten the prompts")
    if cut:
        import logging

        logging.getLogger(__name__).warning("%d of %d examples keep no completion token within max length %d: "
                                            "raise it to train on them", cut, len(dataset), max_length)
    return cut


@torch.no_grad()
def greedy_exact_match(backbone, tokenizer, split, max_length: int, count: int = GENERATED) -> dict:
    """Greedy generation of the first ``count`` test completions of at most LONGEST_GENERATED
    tokens, each exactly as many tokens as the reference: exact match is token equality."""
    backbone.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    matched, shown, tried = 0, [], 0
    for prompt, completion in zip(split.texts, split.completions):
        if tried == count:
            break
        reference = tokenizer(completion, add_special_tokens=False)["input_ids"]
        head = tokenizer(prompt, add_special_tokens=True)["input_ids"] if prompt else [tokenizer.bos_token_id or pad]
        if not reference or len(reference) > LONGEST_GENERATED or len(head) + len(reference) > max_length:
            continue
        tried += 1
        ids = torch.tensor([head], device=backbone.device)
        generated = backbone.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                      max_new_tokens=len(reference), min_new_tokens=len(reference),
                                      pad_token_id=pad)[0, len(head):].tolist()
        matched += generated == reference
        if len(shown) < SHOWN:
            shown.append({"prompt_end": prompt[-160:], "expected": completion,
                          "generated": tokenizer.decode(generated, skip_special_tokens=True)})
    return {"exact_match": matched / tried if tried else math.nan, "exact_match_examples": tried,
            "generations": shown}


def heldout_texts(source: str, tokenizer) -> list[str]:
    """The first HELDOUT texts of a data source read as plain text (a builtin or a file with a
    text column), for the forgetting measurement."""
    from ..inputs.data import load_dataset

    try:
        texts = list(load_dataset(source).texts)
    except DataError:
        found = load_completions(source, tokenizer)
        texts = [p + c for p, c in zip(found.texts, found.completions)]
    return texts[:HELDOUT]


@torch.no_grad()
def heldout_nll(outputs_model, loaded, texts: list[str], max_length: int) -> float:
    """Mean NLL per token of plain texts (every token after the first is scored)."""
    outputs_model.eval()
    total, tokens = 0.0, 0
    for group in models.length_batches(texts, EVAL_BATCH):
        inputs = encode_completions(loaded.tokenizer, [""] * len(group), [texts[i] for i in group], max_length)
        inputs = {k: v.to(loaded.device) for k, v in inputs.items()}
        total -= float(outputs_model(**inputs).sum())
        tokens += int(inputs["completion_mask"][:, 1:].sum())
    return total / tokens
