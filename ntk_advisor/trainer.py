"""train(): one explicit loop that runs a recipe (no Trainer), through Hugging Face Accelerate.

AdamW, linear warmup and decay, gradient clipping, the proximal term, evaluation every
epoch, best-checkpoint keeping, early stopping, a final test evaluation, and resumable
checkpoints. `accelerate launch --num_processes K -m ntk_advisor.cli train ...` runs the
same loop data-parallel; only the main process writes files.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import data as data_lib
from . import models
from .apply import apply_recipe
from ._io import check_replaceable, write_atomically, write_text_atomically
from .errors import TrainError
from .methods.rocoft import save_rocoft_adapter
from .ntk.linearization import linearization_gap
from .recipe import Recipe, recipe_to_dict, save_recipe

Progress = Callable[[str, int, int, dict], None]
CHECKPOINTS = "checkpoints"


@dataclass
class RunResult:
    out: Path
    metrics: dict = field(default_factory=dict)


RUN_ENTRIES = ("checkpoints", "adapter", "metrics.json", "recipe.yaml")  # all that train writes in --out


def _atomic_torch_save(state: dict, path: Path) -> None:
    write_atomically(path, lambda tmp: torch.save(state, tmp))


def _load_checkpoint(path: Path) -> dict | None:
    """A checkpoint's state, or None for a torn or unreadable file.

    Loaded with weights_only=True: tensors and plain data only, so a crafted file can never
    run code; such a file is refused by name instead of being skipped in silence.
    """
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower():
            raise TrainError(f"'{path}' is not a checkpoint of this tool (it asks to build objects or run code "
                             "when loaded): delete it, or start over with --force") from None
        return None
    except Exception:  # noqa: BLE001 - a torn zip, a truncated file: simply not a checkpoint
        return None
    return state if isinstance(state, dict) and state.get("complete") else None


def latest_checkpoint(folder: Path) -> tuple[dict | None, Path | None]:
    """The newest checkpoint that loads; a torn or corrupt file is skipped, never picked up."""
    candidates = sorted((folder / CHECKPOINTS).glob("step-*.pt"), key=_step_number, reverse=True)
    for path in candidates:
        state = _load_checkpoint(path)
        if state is not None:
            return state, path
    return None, None


def _step_number(path: Path) -> int:
    number = path.stem.partition("-")[2]
    return int(number) if number.isdigit() else -1


def _prepare_out(out: Path, resume: bool, force: bool, protect: tuple = ()) -> dict | None:
    if out.exists() and not out.is_dir():
        raise TrainError(f"--out '{out}' is a file, not a folder: choose another --out")
    if out.exists() and any(out.iterdir()):
        if resume:
            state, _ = latest_checkpoint(out)
            if state is None:
                raise TrainError(f"'{out}' has no complete checkpoint to resume from: drop --resume or pass --force")
            return state
        if not force:
            raise TrainError(f"output folder '{out}' already holds files (another run?): pass --resume to continue "
                             "it, --force to start over, or choose another --out")
        check_replaceable(out, entries=RUN_ENTRIES, protect=protect, what="run")
        for name in RUN_ENTRIES:  # only what a run writes: the check above saw nothing else
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    elif resume:
        raise TrainError(f"nothing to resume in '{out}': run without --resume first")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrainError(f"cannot create --out '{out}' ({exc.strerror}): choose a folder you can write") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise TrainError(f"--out '{out}' is not writable: choose a folder you can write")
    return None


def _batches(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The epoch's shuffled batches: a pure function of (seed, epoch), so resume can skip exactly."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def _evaluate(logits_model, loaded, split, max_length: int, batch_size: int = 64) -> dict:
    from sklearn.metrics import f1_score

    logits_model.eval()
    predictions, losses = [], []
    with torch.no_grad():
        for start in range(0, len(split), batch_size):
            idx = range(start, min(start + batch_size, len(split)))
            batch = loaded.encode([split.texts[i] for i in idx], max_length)
            labels = torch.tensor([split.labels[i] for i in idx])
            logits = logits_model(**batch)
            losses.append(torch.nn.functional.cross_entropy(logits, labels, reduction="sum").item())
            predictions.append(logits.argmax(-1))
    predicted = torch.cat(predictions).numpy()
    truth = np.asarray(split.labels)
    return {"accuracy": float((predicted == truth).mean()), "macro_f1": float(f1_score(truth, predicted, average="macro")),
            "loss": sum(losses) / len(split), "examples": len(split)}


def _rss_bytes() -> int:
    """Resident memory now (Linux /proc); elsewhere the process peak so far."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_for_recipe(recipe: Recipe, label_names=None,
                    splits: data_lib.Splits | None = None) -> tuple[models.LoadedModel, dict]:
    """θ0 of a recipe: the model with its head from the training seed, the label words, or a probe.

    Training and export both start here, so an exported run with a frozen head has the head it
    was trained with. Returns the model and a report of how the head was initialized.
    """
    seed = recipe.training.seed
    needs_data = (recipe.model.task == "label-words" and not recipe.data.label_words and label_names is None) or \
        (recipe.model.head_init == "probe" and splits is None)
    dataset = data_lib.load_dataset(recipe.data.source, recipe.data.text_column,
                                    recipe.data.label_column) if needs_data else None
    loaded = models.load_classifier(recipe.model.name, num_labels=recipe.model.num_labels, seed=seed,
                                    task=recipe.model.task, template=recipe.data.template,
                                    label_words=recipe.data.label_words,
                                    label_names=label_names if label_names is not None else
                                    (dataset.label_names if dataset else None))
    if recipe.model.head_init != "probe" or loaded.head_name is None:
        new_head = loaded.head_name is not None and any(n.startswith(loaded.head_name + ".")
                                                        for n in loaded.new_parameter_names)
        kind = "label-words" if loaded.prompt else ("random" if new_head else "checkpoint")
        return loaded, {"kind": kind, "seed": seed} if kind == "random" else {"kind": kind}
    from .profiler import PROBE_HEAD_EXAMPLES, fit_probe_head

    splits = splits or data_lib.split_dataset(dataset, seed=recipe.data.seed)
    return loaded, fit_probe_head(loaded, splits.train, splits.validation, seed=recipe.data.seed,
                                  examples=PROBE_HEAD_EXAMPLES, max_length=recipe.data.max_length)


def train(recipe: Recipe, out: str | Path, resume: bool = False, force: bool = False,
          on_progress: Progress | None = None, protect: tuple = ()) -> RunResult:
    """Run ``recipe`` into the run folder ``out``.

    ``force`` starts over in a folder that holds an earlier run; it deletes only what a run
    writes, and never a folder that holds the data file, the working directory or a path in
    ``protect`` (the CLI passes the recipe file).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    out = Path(out)
    started = time.perf_counter()
    cfg = recipe.training
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    protect = (*protect, *([recipe.data.source] if Path(recipe.data.source).exists() else []))
    state = _prepare_out(out, resume, force, protect) if accelerator.is_main_process else None
    accelerator.wait_for_everyone()
    if state is None and resume:
        state, _ = latest_checkpoint(out)
    progress = on_progress or (lambda *a: None)
    set_seed(cfg.seed)

    dataset = data_lib.load_dataset(recipe.data.source, recipe.data.text_column, recipe.data.label_column)
    if dataset.num_classes != recipe.model.num_labels:
        raise TrainError(f"model.num_labels is {recipe.model.num_labels} but the data has {dataset.num_classes} classes")
    splits = data_lib.split_dataset(dataset, seed=recipe.data.seed)
    loaded, head_report = load_for_recipe(recipe, dataset.label_names, splits=splits)
    targets = {t.name for t in models.discover_targets(loaded.backbone)}
    unknown = [t.module for t in recipe.targets if t.module not in targets]
    if unknown:
        raise TrainError(f"recipe target '{unknown[0]}' is not a Linear module of {recipe.model.name}: "
                         "run ntk-advisor check on the recipe")
    trained, proximal = apply_recipe(loaded.backbone, recipe, loaded.head_name)
    logits_model = models.SequenceLogits(trained)
    params = [p for p in trained.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    per_process = max(1, cfg.batch_size // accelerator.num_processes)
    steps_per_epoch = math.ceil(len(splits.train) / cfg.batch_size)
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    warmup = int(cfg.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total_steps - s) / max(1, total_steps - warmup)))
    logits_model, optimizer = accelerator.prepare(logits_model, optimizer)

    step, history, curve, best = 0, [], [], {"accuracy": -1.0}
    best_state, stale = _trainable_state(trained), 0
    if state is not None:
        with torch.no_grad():
            for name, p in trained.named_parameters():
                if name in state["trainable"]:
                    p.copy_(state["trainable"][name])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        step, history, curve, best, best_state, stale = (state[k] for k in ("step", "history", "curve", "best",
                                                                           "best_state", "stale"))

    def checkpoint():
        if accelerator.is_main_process:
            (out / CHECKPOINTS).mkdir(exist_ok=True)  # again: a folder deleted mid-run costs no work
            _atomic_torch_save({"trainable": _trainable_state(trained), "optimizer": optimizer.state_dict(),
                                "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(), "step": step,
                                "history": history, "curve": curve, "best": best, "best_state": best_state,
                                "stale": stale, "complete": True}, out / CHECKPOINTS / f"step-{step}.pt")
            for old in sorted((out / CHECKPOINTS).glob("step-*.pt"), key=_step_number)[:-2]:
                old.unlink(missing_ok=True)  # keep the two newest

    step_times: list[float] = []
    train_rss = 0
    stop = False
    for epoch in range(math.ceil(total_steps / steps_per_epoch)):
        if stop:
            break
        logits_model.train()
        for position, batch_idx in enumerate(_batches(len(splits.train), cfg.batch_size, cfg.seed, epoch)):
            if epoch * steps_per_epoch + position < step:
                continue  # done before the resume: the order is a pure function of (seed, epoch)
            if step >= total_steps:
                break
            tick = time.perf_counter()
            rank = accelerator.process_index
            local = batch_idx[rank * per_process : (rank + 1) * per_process]
            if len(local) == 0:  # a short last batch: every process must still step together
                local = batch_idx[:1]
            batch = loaded.encode([splits.train.texts[i] for i in local], recipe.data.max_length)
            labels = torch.tensor([splits.train.labels[i] for i in local])
            loss = torch.nn.functional.cross_entropy(logits_model(**batch), labels)
            accelerator.backward(loss + proximal.penalty(trained))
            train_rss = max(train_rss, _rss_bytes())  # activations and gradients are alive here
            proximal.apply_selective(trained)
            accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            curve.append(round(loss.item(), 6))
            step_times.append(time.perf_counter() - tick)
            progress("train", step, total_steps, {"loss": curve[-1], "epoch": epoch})
            if step % cfg.checkpoint_every == 0:
                checkpoint()
        if any(h["epoch"] == epoch for h in history):
            continue  # evaluated before an interruption
        metrics = _evaluate(logits_model, loaded, splits.validation, recipe.data.max_length)
        metrics |= {"epoch": epoch, "step": step, "distance_from_theta0": proximal.distance(trained)}
        history.append(metrics)
        progress("evaluate", epoch + 1, math.ceil(total_steps / steps_per_epoch), metrics)
        if metrics["accuracy"] > best["accuracy"]:
            best, best_state, stale = metrics, _trainable_state(trained), 0
        else:
            stale += 1
            stop = cfg.early_stopping_patience > 0 and stale >= cfg.early_stopping_patience
        checkpoint()

    with torch.no_grad():
        for name, p in trained.named_parameters():
            if name in best_state:
                p.copy_(best_state[name])
    logits_model.eval()
    test = _evaluate(logits_model, loaded, splits.test, recipe.data.max_length)
    gap = _gap(loaded, logits_model, trained, proximal, splits.validation, recipe.data.max_length)
    metrics = {
        "head_init": head_report,
        "validation_best": best, "test": test, "history": history, "loss_curve": curve,
        "steps": step, "trainable_parameters": sum(p.numel() for p in params),
        "optimizer_state_bytes": sum(t.numel() * t.element_size() for s in optimizer.state.values()
                                     for k, t in s.items() if torch.is_tensor(t) and k != "step"),
        "distance_from_theta0": proximal.distance(trained), **gap,
        "seconds_per_step_median": float(np.median(step_times)) if step_times else None,
        "wall_seconds": time.perf_counter() - started,
        "peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_train_step_rss_bytes": train_rss,  # the peak above also covers loading and evaluation
        "processes": accelerator.num_processes,
    }
    if accelerator.is_main_process:
        _write_run(out, recipe, trained, metrics)
    accelerator.wait_for_everyone()
    return RunResult(out, metrics)


def _gap(loaded, logits_model, trained, proximal, split, max_length: int, examples: int = 64) -> dict:
    """Linearization gap on the first validation examples (dropout off)."""
    batch = loaded.encode(split.texts[:examples], max_length)
    wrapper = logits_model.module if hasattr(logits_model, "module") else logits_model
    current = {f"backbone.{n}": p for n, p in trained.named_parameters() if p.requires_grad}
    start = {f"backbone.{n}": proximal.theta0[n] for n, _ in trained.named_parameters() if n in proximal.theta0}
    try:
        return linearization_gap(wrapper, current, start, batch)
    except RuntimeError as exc:  # forward AD not implemented for some kernel: report, don't fail the run
        return {"linearization_gap": None, "linearization_error": str(exc).splitlines()[0]}


def _write_run(out: Path, recipe: Recipe, trained, metrics: dict) -> None:
    adapter = out / "adapter"
    tmp = Path(tempfile.mkdtemp(prefix=".adapter-", dir=out))
    if recipe.method == "rocoft":
        save_rocoft_adapter(trained, tmp, {"base_model": recipe.model.name, "num_labels": recipe.model.num_labels})
    else:
        trained.save_pretrained(tmp)
    if adapter.exists():
        shutil.rmtree(adapter)
    os.replace(tmp, adapter)
    save_recipe(recipe, out / "recipe.yaml", command=f"ntk-advisor train {out / 'recipe.yaml'} --out {out}")
    write_text_atomically(out / "metrics.json", json.dumps(metrics | {"recipe": recipe_to_dict(recipe)}, indent=2,
                                                        default=float) + "\n")
