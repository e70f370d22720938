"""Advice inside Hugging Face `Trainer`: one callback, no other change to the script.

An ordinary `Trainer` script on real minilm-l6 + vader-movie sentences. `PlacementCallback`
profiles a sample of the training texts when the Trainer is built, puts a LoRA adapter on the
modules and ranks the advice chooses (21,506 parameters with the head), and adds the recipe's
proximal term to the gradients before each optimizer step. About a minute on 2 CPU cores:

    .venv/bin/python examples/trainer_callback.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments

import ntk_advisor
from ntk_advisor import load_classifier, split_dataset
from ntk_advisor.inputs.data import load_dataset


def main(steps: int = 5, budget: int = 21_506) -> dict:
    loaded = load_classifier("minilm-l6", num_labels=2, seed=0)
    model, tokenizer = loaded.backbone, loaded.tokenizer
    train = split_dataset(load_dataset("vader-movie"), seed=0).train
    texts, labels = list(train.texts[:2_000]), list(train.labels[:2_000])
    rows = [dict(tokenizer(text, truncation=True, max_length=32), labels=label)
            for text, label in zip(texts[:16 * steps], labels[:16 * steps])]

    # The added line: the callback places the advice before Trainer builds its optimizer.
    callback = ntk_advisor.PlacementCallback(tokenizer, texts, labels, budget=budget, method="lora",
                                             samples=32, max_length=32, signal_samples=128)
    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(output_dir=scratch, max_steps=steps, per_device_train_batch_size=16,
                                 learning_rate=2e-3, report_to=[], save_strategy="no", logging_steps=1,
                                 use_cpu=True, disable_tqdm=True)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        trainer = Trainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer,
                          callbacks=[callback])
        trainer.train()
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        callback.model.save_pretrained(Path(scratch, "adapter"))  # a PEFT adapter folder, as `train` writes
        saved = sorted(p.name for p in Path(scratch, "adapter").iterdir())
    # Pretrained tensors keep their names under PEFT unless wrapped; none of them may move.
    frozen_moved = sorted(n for n, p in model.named_parameters() if n in before and not torch.equal(p, before[n]))
    theta0 = callback.proximal.theta0
    trained_moved = sorted(n for n, p in callback.model.named_parameters() if n in theta0
                           and not torch.equal(p, theta0[n]))
    print(callback.recipe.evidence["uncertainty"]["sentence"])
    return {"trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "budget": callback.recipe.evidence["trainable"]["total"], "losses": losses, "frozen_moved": frozen_moved,
            "trained_moved": trained_moved,
            "distance_from_theta0": callback.proximal.distance(callback.model), "saved": saved,
            "lora_modules": len(callback.recipe.targets)}


if __name__ == "__main__":
    print(main())
