"""What one training step of a recipe will cost, from the model's config alone: `plan --recipe`.

The recipe is applied to the model built on the meta device (no weights read or allocated),
so the trainable set is exactly the one `train` makes: RoCoFT slices, PEFT LoRA modules, the
head. With B examples a step of T tokens (padded to the batch's longest), P_lin the weights
of every Linear-like product the forward runs (LoRA's A and B included; a RoCoFT slice adds
|R|·d_in or d_out·|C|), P_train the trainable weights among them, L layers of width H
(flops count 2 per multiply-add):

    forward          = 2·B·T·P_lin + 4·B·T²·H·L            (the products, then QKᵀ and AV)
    activation grads = 2·B·T·P_lin + 8·B·T²·H·L            (every frozen product still passes the
                                                            gradient down; attention's backward
                                                            is twice its forward)
    weight grads     = 2·B·T·P_train                        (only the trainable weights)

Memory: the weights in their dtype; per trainable weight 6 copies in its dtype (the weight,
its gradient, AdamW's two moments, θ0 of the proximal term, and the best state the loop
keeps); and the activations autograd saves for the backward pass, counted by running the
forward on the meta device under `torch.autograd.graph.saved_tensors_hooks` (each saved
tensor once). The forward runs without an attention mask (the mask's branches read data,
which the meta device has none of), so padding is counted as tokens, as the step computes
them. A causal LM adds its loss's log-softmax over the vocabulary (B·T·V floats).
docs/plan.md gives the measured ratio of these figures to real steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import RecipeError
from ..profiling.plan import seconds_at
from ..recipe.schema import Recipe
from .apply import apply_recipe

TRAINABLE_COPIES = 6  # weight, gradient, AdamW's two moments, θ0, the best state


@dataclass
class StepPlan:
    settings: dict
    flops: dict[str, float]
    memory: dict[str, float]
    trainable: int

    def seconds(self, flops_per_second: float) -> dict[str, float]:
        return seconds_at(self.flops, flops_per_second)


def plan_step(recipe: Recipe, tokens: float | None = None, peak_tokens: int | None = None,
              steps: int | None = None, dtype: torch.dtype = torch.float32) -> StepPlan:
    """Count one training step of ``recipe`` with the weights in ``dtype`` (train runs float32).
    tokens: a batch's padded length on average, for the flops; peak_tokens: the longest padded
    batch, for the memory (both default to the recipe's max_length, the most a batch pads to);
    steps: the run's steps, when known, for the whole run's estimate (`data_step_facts`)."""
    from ..tasks import get_task

    length = float(min(tokens or recipe.data.max_length, recipe.data.max_length))
    peak = min(peak_tokens or recipe.data.max_length, recipe.data.max_length)
    batch = recipe.training.batch_size
    model, head_name = get_task(recipe.model.task).meta_model(recipe.model.name, recipe.model.num_labels, dtype)
    structural = recipe.model_copy(update={"training": _default_init(recipe)})
    trained, _ = apply_recipe(model, structural, head_name)
    trained.train()
    trainable = sum(p.numel() for p in trained.parameters() if p.requires_grad)
    products, trainable_products = _product_weights(trained)
    config = model.config
    layers = getattr(config, "num_hidden_layers", 0) or 0
    width = getattr(config, "hidden_size", 0) or 0
    attention = 4 * batch * length * length * width * layers
    flops = {"forward": 2 * batch * length * products + attention,
             "activation grads": 2 * batch * length * products + 2 * attention,
             "weight grads": 2 * batch * length * trainable_products}
    parameter_bytes = sum(p.numel() * p.element_size() for p in trained.parameters())
    trainable_bytes = sum(p.numel() * p.element_size() for p in trained.parameters() if p.requires_grad)
    memory = {"weights": parameter_bytes - trainable_bytes,
              "trainable state": TRAINABLE_COPIES * trainable_bytes,
              "activations": saved_activation_bytes(trained, batch, peak)}
    settings = {"model": recipe.model.name, "task": recipe.model.task, "method": recipe.method,
                "batch_size": batch, "tokens": length, "peak_tokens": peak, "max_length": recipe.data.max_length,
                "hidden_size": width, "layers": layers, "steps": steps}
    return StepPlan(settings, flops, memory, trainable)


def _default_init(recipe: Recipe):
    """The recipe's training settings with PEFT's default LoRA init: EVA and LoRA-GA read data
    to initialize, which a plan has none of. LoRA-GA keeps the recipe's ranks; EVA may move rank
    between modules when it initializes, so for it the plan counts the recipe's ranks."""
    return recipe.training.model_copy(update={"lora_init": "default"})


def _product_weights(model: nn.Module) -> tuple[int, int]:
    """(P_lin, P_train): weights of every matrix product the forward runs, and the trainable ones."""
    total = trainable = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D":
            total += weight.numel()
            trainable += weight.numel() if weight.requires_grad else 0
        delta = getattr(module, "delta", None)  # a RoCoFT slice: x Δᵀ on its rows or columns
        if isinstance(delta, nn.Parameter):
            total += delta.numel()
            trainable += delta.numel() if delta.requires_grad else 0
    return total, trainable


def saved_activation_bytes(model: nn.Module, batch: int, length: int) -> int:
    """Bytes autograd keeps for the backward pass of one (batch, length) forward on the meta device."""
    saved: dict[int, torch.Tensor] = {}

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        saved[id(tensor)] = tensor
        return tensor

    ids = torch.zeros(batch, length, dtype=torch.long, device="meta")
    try:
        with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
            logits = model(input_ids=ids).logits  # (B, C) for a classifier, (B, T, V) for a causal LM
            if logits.dim() == 3:  # the loss's log-probabilities over the vocabulary
                torch.log_softmax(logits.float(), dim=-1)
    except (RuntimeError, NotImplementedError) as exc:
        raise RecipeError(f"this model's forward pass cannot run on the meta device, so its activations cannot be "
                          f"planned ({str(exc).splitlines()[0][:120]}); measure a few steps with train "
                          "training.max_steps=5 instead") from None
    return sum(t.numel() * t.element_size() for t in saved.values())


def data_step_facts(recipe: Recipe, limit: int = 1000, draws: int = 256) -> dict:
    """What the recipe's data adds to a step plan, from its tokenizer alone: the expected padded
    length of a batch (the mean, over ``draws`` random batches of the first ``limit`` training
    examples, of the batch's longest example, since batches pad to their longest) and the run's
    steps (max_steps, else epochs × batches per epoch)."""
    import math

    from ..inputs import data as data_lib
    from ..inputs import models
    from ..tasks import get_task

    task = get_task(recipe.model.task)
    splits = data_lib.split_dataset(task.read_data(recipe), seed=recipe.data.seed)
    tokenizer = models.load_tokenizer(models.resolve_model_source(recipe.model.name))
    lengths = torch.tensor(task.token_lengths(recipe, splits.train.subset(range(min(limit, len(splits.train)))),
                                              tokenizer), dtype=torch.float64)
    batch = min(recipe.training.batch_size, len(lengths))
    generator = torch.Generator().manual_seed(recipe.training.seed)
    drawn = torch.stack([lengths[torch.randperm(len(lengths), generator=generator)[:batch]] for _ in range(draws)])
    steps = recipe.training.max_steps or recipe.training.epochs * math.ceil(len(splits.train) / recipe.training.batch_size)
    longest = drawn.max(1).values
    return {"tokens": float(longest.mean()), "peak_tokens": int(longest.max()), "steps": steps}
