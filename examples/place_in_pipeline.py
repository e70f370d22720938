"""Automatic adapter placement inside an existing training script: two added lines.

The script below is an ordinary fine-tuning loop on real minilm-l6 + vader-movie sentences.
`ntk_advisor.place` profiles a sample of the training texts, recommends where 21,506
trainable parameters go (RoCoFT rows here; method="lora" returns a PEFT model), and puts
them on the model; the loop then trains as it would have. About a minute on 2 CPU cores:

    .venv/bin/python examples/place_in_pipeline.py
"""

from __future__ import annotations

import torch

import ntk_advisor
from ntk_advisor import load_classifier, split_dataset
from ntk_advisor.inputs.data import load_dataset


def main(steps: int = 5, budget: int = 21_506) -> dict:
    loaded = load_classifier("minilm-l6", num_labels=2, seed=0)
    model, tokenizer = loaded.backbone, loaded.tokenizer
    train = split_dataset(load_dataset("vader-movie"), seed=0).train
    texts, labels = list(train.texts[:2_000]), list(train.labels[:2_000])

    # The two lines that add the advice (the rest of the script is unchanged):
    model, recipe = ntk_advisor.place(model, tokenizer, texts, labels, budget=budget, method="rocoft",
                                      samples=32, max_length=32, signal_samples=256)
    print(recipe.evidence["uncertainty"]["sentence"])

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    model.train()
    losses = []
    for step in range(steps):
        batch = tokenizer(texts[step * 16:(step + 1) * 16], truncation=True, max_length=32, padding=True,
                          return_tensors="pt")
        loss = model(**batch, labels=torch.tensor(labels[step * 16:(step + 1) * 16])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss))
    return {"trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "budget": recipe.evidence["trainable"]["total"], "modules": len(recipe.targets), "losses": losses}


if __name__ == "__main__":
    print(main())
