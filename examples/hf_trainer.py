"""A recipe applied inside Hugging Face `Trainer`, then the adapter loaded back for inference.

apply_recipe() places the recipe's RoCoFT rows on the model; Trainer trains only them (and the
head); the proximal term enters as a loss (plain) or as a gradient rule before each optimizer
step (selective). Runs on real minilm-l6 + vader-movie in under a minute on 2 CPU cores:

    .venv/bin/python examples/hf_trainer.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from ntk_advisor import apply_recipe, load_adapter, load_classifier, load_recipe, split_dataset
from ntk_advisor.inputs.data import load_dataset
from ntk_advisor.inputs.models import encode
from ntk_advisor.methods.rocoft import save_rocoft_adapter

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "minilm-l6" / "vader-movie-rocoft-rows-21k.yaml"


class ProximalTrainer(Trainer):
    """Trainer whose loss carries the plain proximal term (λ/2)‖θ − θ0‖²."""

    def __init__(self, *args, proximal, **kwargs):
        super().__init__(*args, **kwargs)
        self.proximal = proximal

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, **kwargs)
        loss = loss + self.proximal.penalty(model)
        return (loss, outputs) if return_outputs else loss


class SelectiveDecay(TrainerCallback):
    """The selective proximal rule, applied to the gradients right before each optimizer step."""

    def __init__(self, proximal):
        self.proximal = proximal

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.proximal.apply_selective(model)


def main(steps: int = 3) -> dict:
    recipe = load_recipe(RECIPE)
    loaded = load_classifier(recipe.model.name, num_labels=recipe.model.num_labels, seed=0)
    model, proximal = apply_recipe(loaded.backbone, recipe, loaded.head_name)
    train_split = split_dataset(load_dataset("vader-movie"), seed=recipe.data.seed).train
    examples = [{**{k: v[0] for k, v in encode(loaded.tokenizer, [train_split.texts[i]], 32).items()},
                 "labels": torch.tensor(train_split.labels[i])} for i in range(16 * steps)]

    def collate(rows):
        width = max(len(r["input_ids"]) for r in rows)
        pad = {k: torch.stack([torch.nn.functional.pad(r[k], (0, width - len(r[k]))) for r in rows])
               for k in ("input_ids", "attention_mask")}
        return pad | {"labels": torch.stack([r["labels"] for r in rows])}

    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(output_dir=scratch, max_steps=steps, per_device_train_batch_size=16,
                                 learning_rate=recipe.training.learning_rate, report_to=[], save_strategy="no",
                                 logging_steps=1, use_cpu=True, disable_tqdm=True)
        callbacks = [SelectiveDecay(proximal)] if recipe.proximal.mode == "selective" else []
        trainer = ProximalTrainer(model=model, args=args, train_dataset=examples, data_collator=collate,
                                  proximal=proximal, callbacks=callbacks)
        trainer.train()
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]

        # Inference elsewhere: save the adapter, load it onto a fresh base model, same logits.
        save_rocoft_adapter(model, Path(scratch) / "adapter", {"base_model": recipe.model.name})
        fresh = load_classifier(recipe.model.name, num_labels=recipe.model.num_labels, seed=123)
        restored = load_adapter(fresh.backbone, Path(scratch) / "adapter")
        batch = encode(loaded.tokenizer, ["a warm, funny and moving film", "flat and lifeless"], 32)
        model.eval()
        restored.eval()
        with torch.no_grad():
            same = torch.allclose(model(**batch).logits, restored(**batch).logits, atol=1e-6)
    summary = {"losses": losses, "adapter_round_trip_equal": same,
               "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    print(summary)
    return summary


if __name__ == "__main__":
    main()
