"""place(): advice inside an existing training script, in one call.

    model, recipe = ntk_advisor.place(model, tokenizer, texts, labels, budget=21_506)
    # ... train `model` with your own loop or transformers.Trainer, as before

It profiles a sample of the examples, recommends a placement at the budget and puts it on
``model``: PEFT LoRA (``method="lora"``, a PeftModel comes back) or RoCoFT rows (the same
model with the chosen slices trainable and everything else frozen). The model is written
once to a scratch folder, because the profile and the recommendation rebuild it from a
folder exactly as the CLI does; the examples too. Nothing stays behind unless ``keep`` names
a folder, which then holds the profile and recipe.yaml.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import fields
from pathlib import Path
from typing import Sequence

from .errors import DataError


def place(model, tokenizer, texts: Sequence[str], labels: Sequence, budget: int, method: str = "rocoft", *,
          samples: int = 64, max_length: int = 64, seed: int = 0, keep: str | Path | None = None,
          on_progress=None, **settings):
    """Profile ``model`` on the examples, recommend ``budget`` trainable parameters, apply them.

    ``model`` is a transformers sequence classifier (its head already sized to the classes),
    ``labels`` class names or ids, one per text. Extra keyword ``settings`` go to
    ``ProfileConfig`` or ``RecommendConfig`` by name (``allocation="uniform"``,
    ``signal_samples=512``, ...). Returns (the model to train, the Recipe); the recipe's
    ``model.name`` and ``data.source`` point at the scratch copies.
    """
    from .advice.recommend import RecommendConfig, recommend
    from .profiling.folder import save_profile
    from .profiling.profiler import ProfileConfig, profile
    from .recipe.io import save_recipe
    from .training.apply import apply_recipe

    labels = [label.item() if hasattr(label, "item") else label for label in labels]  # numpy / torch scalars
    if len(texts) != len(labels):
        raise DataError(f"place() got {len(texts)} texts but {len(labels)} labels: give one label per text")
    profile_keys = {f.name for f in fields(ProfileConfig)}
    unknown = sorted(set(settings) - profile_keys - {f.name for f in fields(RecommendConfig)})
    if unknown:
        raise TypeError(f"place() got unknown setting '{unknown[0]}': use a ProfileConfig or RecommendConfig field")
    with tempfile.TemporaryDirectory(prefix="ntk-advisor-place-") as scratch:
        work = Path(keep) if keep is not None else Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(work / "model")
        tokenizer.save_pretrained(work / "model")
        data = work / "examples.jsonl"
        data.write_text("".join(json.dumps({"text": t, "label": lab}, ensure_ascii=False) + "\n"
                                for t, lab in zip(texts, labels)), encoding="utf-8")
        profile_config = ProfileConfig(model=str(work / "model"), data=str(data), samples=samples,
                                       max_length=max_length, seed=seed,
                                       **{k: v for k, v in settings.items() if k in profile_keys})
        folder = save_profile(profile(profile_config, on_progress=on_progress), work / "profile", force=True)
        recipe = recommend(folder, RecommendConfig(method=method, budget=budget, seed=seed,
                                                   **{k: v for k, v in settings.items() if k not in profile_keys}))
        if keep is not None:
            save_recipe(recipe, work / "recipe.yaml")
        head = _head_of(model)

        def calibration():  # input batches for a data-driven init (training.lora_init=eva)
            from .inputs.models import encode

            sample = list(texts[:256])
            return [encode(tokenizer, sample[i:i + 32], max_length) for i in range(0, len(sample), 32)]

        trained, _ = apply_recipe(model, recipe, head, calibration=calibration)
    return trained, recipe


def _head_of(model) -> str | None:
    """The classification head's module name, found as the loader finds it in a saved classifier."""
    from .inputs.models import discover_targets

    heads = [t.name for t in discover_targets(model) if t.role == "head"]
    return heads[-1] if heads else None
