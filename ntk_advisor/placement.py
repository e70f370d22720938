"""place(): advice inside an existing training script, in one call.

    model, recipe = ntk_advisor.place(model, tokenizer, texts, labels, budget=21_506)
    # ... train `model` with your own loop or transformers.Trainer, as before

It profiles a sample of the examples, recommends a placement at the budget and puts it on
``model``: PEFT LoRA (``method="lora"``, a PeftModel comes back) or RoCoFT rows (the same
model with the chosen slices trainable and everything else frozen). The model is written
once to a scratch folder, because the profile and the recommendation rebuild it from a
folder exactly as the CLI does; the examples too. Nothing stays behind unless ``keep`` names
a folder, which then holds the profile and recipe.yaml.

PlacementCallback does the same inside ``transformers.Trainer`` and applies the proximal term:

    callback = ntk_advisor.PlacementCallback(tokenizer, texts, labels, budget=21_506, method="lora")
    Trainer(model=model, args=args, train_dataset=..., callbacks=[callback]).train()
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
    from .profiling import distributed
    from .profiling.folder import save_profile
    from .profiling.profiler import ProfileConfig, profile
    from .recipe.io import parse_recipe, recipe_to_dict, save_recipe
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
        _save_model(model, work / "model", distributed.rank())
        tokenizer.save_pretrained(work / "model")
        data = work / "examples.jsonl"
        data.write_text("".join(json.dumps({"text": t, "label": lab}, ensure_ascii=False) + "\n"
                                for t, lab in zip(texts, labels)), encoding="utf-8")
        profile_config = ProfileConfig(model=str(work / "model"), data=str(data), samples=samples,
                                       max_length=max_length, seed=seed,
                                       **{k: v for k, v in settings.items() if k in profile_keys})
        result = profile(profile_config, on_progress=on_progress)  # under DDP each rank does its share
        recipe = None
        if result is not None:  # rank 0, or the only process
            folder = save_profile(result, work / "profile", force=True)
            recipe = recommend(folder, RecommendConfig(method=method, budget=budget, seed=seed,
                                                       **{k: v for k, v in settings.items() if k not in profile_keys}))
            if keep is not None:
                save_recipe(recipe, work / "recipe.yaml")
        if distributed.world() > 1:  # every rank applies rank 0's recipe
            recipe = parse_recipe(distributed.broadcast_from_rank0(recipe_to_dict(recipe) if recipe else None))
        head = _head_of(model)

        def calibration():  # input batches for a data-driven init (training.lora_init=eva)
            from .inputs.models import encode

            sample = list(texts[:256])
            return [encode(tokenizer, sample[i:i + 32], max_length) for i in range(0, len(sample), 32)]

        trained, _ = apply_recipe(model, recipe, head, calibration=calibration)
    return trained, recipe


def _save_model(model, folder: Path, rank: int) -> None:
    """The model as a folder the loaders read. transformers writes on rank 0 only once a
    process group is up, so the other ranks write the config and the weights themselves
    (safetensors' save_model, which keeps tied weights once)."""
    if rank == 0:
        model.save_pretrained(folder)
        return
    from safetensors.torch import save_model

    folder.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(folder)
    save_model(model, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _shares_trainables(model, placed) -> bool:
    """Whether ``model`` trains the placed model's tensors (PEFT wraps the model it adapts, so
    the two objects differ but hold the same parameters)."""
    mine = {id(p) for p in placed.parameters() if p.requires_grad}
    return bool(mine) and mine == {id(p) for p in model.parameters() if p.requires_grad}


def _head_of(model) -> str | None:
    """The classification head's module name, found as the loader finds it in a saved classifier."""
    from .inputs.models import discover_targets

    heads = [t.name for t in discover_targets(model) if t.role == "head"]
    return heads[-1] if heads else None


class PlacementCallback:
    """Advice inside ``transformers.Trainer``: ``Trainer(..., callbacks=[PlacementCallback(...)])``.

    It places the budget when the Trainer is built (``on_init_end``) and adds the recipe's
    proximal term to the gradients before every optimizer step (``on_pre_optimizer_step``):
    plain adds λ(θ − θ0) (the gradient of (λ/2)‖θ − θ0‖²), selective applies
    ``Proximal.apply_selective``. Trainer clips gradients before that hook, so the proximal
    gradient is not clipped, unlike a penalty added to the loss (`ntk-advisor train` applies
    the selective rule before clipping). ``on_train_begin`` stops the run when nothing was
    placed (a callback added after the Trainer was built, or ``model_init``). Save
    ``callback.model``, not ``trainer.save_model()``, which writes the base model with PEFT's
    injected names. Under several processes (DDP: the process group is up before the Trainer
    is built) the ranks split the profile (profiling.distributed), rank 0 recommends, and
    every rank applies rank 0's recipe.

    Why not ``on_train_begin``: Trainer creates its optimizer before that event, over the
    parameters that are trainable then, so a LoRA adapter added there would never train.
    ``on_init_end`` is the last event before the optimizer exists. Placement changes the
    Trainer's model in place (PEFT injects LoRA layers into the model it wraps; RoCoFT wraps
    Linears where they are), so Trainer trains it without being told. After training,
    ``callback.model`` is the placed model to save (a PeftModel for LoRA) and
    ``callback.recipe`` the recipe; the arguments are place()'s.

    The class follows TrainerCallback's protocol without importing transformers (that import
    lives in inputs/models.py): every event it does not define is a no-op.
    """

    def __init__(self, tokenizer, texts: Sequence[str], labels: Sequence, budget: int, method: str = "rocoft",
                 **place_settings):
        self.tokenizer, self.texts, self.labels = tokenizer, texts, labels
        self.budget, self.method, self.place_settings = budget, method, place_settings
        self.model = self.recipe = self.proximal = None

    def on_init_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        from .training.apply import Proximal

        if optimizer is not None:
            raise TypeError("PlacementCallback must choose the trainable parameters before the optimizer exists: "
                            "do not pass optimizers= to Trainer together with it")
        if model is None:
            raise TypeError("PlacementCallback got no model from Trainer: build Trainer with model=")
        self.model, self.recipe = place(model, self.tokenizer, self.texts, self.labels, self.budget, self.method,
                                        **self.place_settings)
        theta0 = {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}
        self.proximal = Proximal(self.recipe.proximal.strength, self.recipe.proximal.mode, theta0)
        return control

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        """A callback added after the Trainer was built (``trainer.add_callback``) or a model
        rebuilt by ``model_init`` never saw on_init_end: training would silently fine-tune
        every weight, so it stops here instead."""
        placed = self.model is not None and model is not None and _shares_trainables(model, self.model)
        if not placed:
            raise RuntimeError("PlacementCallback placed nothing on the model Trainer is training: pass it in "
                               "Trainer(callbacks=[...]) at construction, with model= (not model_init=)")
        return control

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.proximal is not None:
            self.proximal.add_gradient(self.model)
        return control

    def __getattr__(self, name: str):
        if name.startswith("on_"):  # Trainer calls every event on every callback
            return lambda args, state, control, **kwargs: control
        raise AttributeError(f"'PlacementCallback' object has no attribute '{name}'")
