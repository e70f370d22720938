"""train(): one explicit loop that runs a recipe (no Trainer), through Hugging Face Accelerate.

AdamW, linear warmup and decay, gradient clipping, the proximal term, evaluation every
epoch, best-checkpoint keeping, early stopping, a final test evaluation, and resumable
checkpoints. `accelerate launch --num_processes K -m ntk_advisor.cli train ...` runs the
same loop data-parallel; only the main process writes files. The loop is a `_Run` in named
phases (setup, restore, step, evaluate, checkpoint, finish), as torchtune's single-device
recipes are; `train` calls them in order.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .._io import OutputClaim, write_folder_atomically, write_text_atomically
from ..errors import RecipeError, TrainError
from ..inputs import data as data_lib
from ..inputs import models
from ..methods import get_method
from ..ntk.linearization import linearization_gap
from ..recipe.check import check_targets
from ..recipe.io import recipe_to_dict, save_recipe
from ..recipe.provenance import check_provenance
from ..recipe.schema import Recipe
from ..tasks import get_task
from .apply import apply_recipe
from .checkpoints import CHECKPOINTS, latest_checkpoint, prepare_out, prune_checkpoints, save_checkpoint
from .theta0 import load_for_recipe

Progress = Callable[[str, int, int, dict], None]
log = logging.getLogger(__name__)
LOOP_STATE = ("step", "history", "curve", "best", "best_state", "stale")  # what a checkpoint carries


@dataclass
class RunResult:
    out: Path
    metrics: dict = field(default_factory=dict)


def _batches(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The epoch's shuffled batches: a pure function of (seed, epoch), so resume can skip exactly."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def _rss_bytes() -> int:
    """Resident memory now (Linux /proc); elsewhere the process peak so far."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _accelerator(device: str):
    """Accelerate on the chosen device: ``cpu`` keeps it off every GPU, ``cuda:N`` makes GPU N
    the current one (a single process only: a launcher's processes keep their local rank's)."""
    from accelerate import Accelerator

    from ..devices import resolve_device

    chosen = resolve_device(device)
    if chosen.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        torch.cuda.set_device(chosen)
    return Accelerator(cpu=chosen.type == "cpu")


def _trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def train(recipe: Recipe, out: str | Path, resume: bool = False, force: bool = False,
          on_progress: Progress | None = None, protect: tuple = (), device: str = "auto") -> RunResult:
    """Run ``recipe`` into the run folder ``out`` on ``device`` (devices.resolve_device; under
    torchrun or ``accelerate launch`` each process takes the GPU of its local rank).

    ``force`` starts over in a folder that holds an earlier run; it deletes only what a run
    writes, and never a folder that holds the data file, the working directory or a path in
    ``protect`` (the CLI passes the recipe file).
    """
    with _own_accelerate_state():
        return _train(recipe, Path(out), resume, force, on_progress, protect, device)


@contextlib.contextmanager
def _own_accelerate_state():
    """A run's Accelerate set-up comes from its own arguments and its launcher's environment
    alone. Accelerate keeps one state per process (device, mixed precision, compile plugin,
    gradient accumulation), and a Trainer that ran earlier in it leaves its own: TRL's
    SFTConfig trains in bf16 by default, even on a CPU, and `train` after it ran under bf16
    autocast, so the same recipe trained to other weights in a pipeline than from the shell. A
    single process sets the earlier state aside for the run and puts it back afterwards, for
    its owner (an empty one stays empty); under a launcher the state is the launcher's."""
    import torch.distributed as dist
    from accelerate import state as accelerate_state

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or (dist.is_available() and dist.is_initialized()):
        yield
        return
    shared = [getattr(accelerate_state, name)._shared_state for name in ("PartialState", "AcceleratorState",
                                                                          "GradientState")]
    saved = [dict(state) for state in shared]
    for state in shared:
        state.clear()
    try:
        yield
    finally:
        for state, before in zip(shared, saved):
            state.clear()
            state.update(before)


def _train(recipe: Recipe, out: Path, resume: bool, force: bool, on_progress: Progress | None, protect: tuple,
           device: str) -> RunResult:
    run = _Run(recipe, Path(out), on_progress or (lambda *a: None), device)
    created = not Path(out).exists()
    with OutputClaim(Path(out)) if run.accelerator.is_main_process else contextlib.nullcontext():
        state = run.prepare(resume, force, protect)
        try:
            run.setup()
        except Exception:
            if created and run.accelerator.is_main_process and not any(Path(out).iterdir()):
                Path(out).rmdir()  # bad data or a bad recipe leaves no empty run folder behind
            raise
        if state is not None:
            run.restore(state)
        run.train()
        return run.finish()


class _Run:
    def __init__(self, recipe: Recipe, out: Path, progress: Progress, device: str):
        self.recipe, self.out, self.progress, self.cfg = recipe, out, progress, recipe.training
        self.started = time.perf_counter()
        self.accelerator = _accelerator(device)
        self.step, self.history, self.curve, self.best, self.stale = 0, [], [], {}, 0
        self.step_times: list[float] = []
        self.train_rss = 0

    # ------------------------------------------------------------------ setup
    def prepare(self, resume: bool, force: bool, protect: tuple) -> dict | None:
        """Check --out (only the main process touches it); the checkpoint to resume from, if any."""
        source = self.recipe.data.source
        protect = (*protect, *([source] if Path(source).exists() else []))
        state = prepare_out(self.out, resume, force, protect) if self.accelerator.is_main_process else None
        self.accelerator.wait_for_everyone()
        if state is None and resume:
            state, _ = latest_checkpoint(self.out)
        return state

    def setup(self) -> None:
        from accelerate.utils import set_seed

        recipe, cfg = self.recipe, self.cfg
        set_seed(cfg.seed)
        dataset = get_task(recipe.model.task).read_data(recipe)
        self.splits = data_lib.split_dataset(dataset, seed=recipe.data.seed)
        self.provenance = check_provenance(recipe, dataset)
        self.loaded, self.head_report = load_for_recipe(recipe, dataset.label_names, splits=self.splits,
                                                        device=self.accelerator.device)
        self.task = get_task(self.loaded.task)
        try:  # the same checks as `ntk-advisor check`: an index out of range must not reach the model
            check_targets(recipe, {t.name: t for t in models.discover_targets(self.loaded.backbone)})
        except RecipeError as exc:
            raise TrainError(f"{exc}; fix the recipe (ntk-advisor check shows every problem)") from None
        self.trained, self.proximal = apply_recipe(self.loaded.backbone, recipe, self.loaded.head_name,
                                                   calibration=self._calibration, gradient_step=self._gradient_step)
        self.params = [p for p in self.trained.parameters() if p.requires_grad]
        claimed = recipe.evidence.get("trainable", {}).get("total") if isinstance(recipe.evidence, dict) else None
        if claimed is not None and claimed != sum(p.numel() for p in self.params):
            log.warning("this run trains %s parameters, the recipe's evidence says %s (a data-driven init such as "
                        "EVA moves rank between modules of different size)",
                        f"{sum(p.numel() for p in self.params):,}", f"{claimed:,}")
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        self.steps_per_epoch = math.ceil(len(self.splits.train) / cfg.batch_size)
        self.total_steps = cfg.max_steps or cfg.epochs * self.steps_per_epoch
        total, warmup = self.total_steps, int(cfg.warmup_ratio * self.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: (s + 1) / max(1, warmup) if s < warmup
                                                           else max(0.0, (total - s) / max(1, total - warmup)))
        self.logits_model, self.optimizer = self.accelerator.prepare(self.task.outputs_model(self.trained),
                                                                     self.optimizer)
        self.best_state = _trainable_state(self.trained)
        self.at_theta0 = self.task.at_theta0(self.logits_model, self.loaded, recipe)  # setup runs before restore

    def _calibration(self, examples: int = 256) -> list[dict]:
        """Input batches of the first training examples, for a data-driven adapter init (EVA)."""
        count, size = min(examples, len(self.splits.train)), self.cfg.batch_size
        batches = [self.task.batch(self.loaded, self.splits.train, range(i, min(i + size, count)),
                                   self.recipe.data.max_length)[0] for i in range(0, count, size)]
        return [{k: b[k] for k in ("input_ids", "attention_mask")} for b in batches]  # what the bare model reads

    def _gradient_step(self, model, examples: int = 256) -> None:
        """The task's loss, forward and backward, on the first training examples (LoRA-GA's gradient)."""
        outputs_model = self.task.outputs_model(model)
        count, size = min(examples, len(self.splits.train)), self.cfg.batch_size
        for start in range(0, count, size):
            inputs, targets = self.task.batch(self.loaded, self.splits.train, range(start, min(start + size, count)),
                                              self.recipe.data.max_length)
            self.task.loss(outputs_model(**inputs), targets).backward()

    def restore(self, state: dict) -> None:
        started_with = state.get("recipe")
        if started_with is not None and started_with != _what_trains(self.recipe):
            changed = _first_difference(started_with, _what_trains(self.recipe))
            raise TrainError(f"the checkpoint in '{self.out}' was started from another recipe ({changed} differs): "
                             "resume with the recipe it was started with, or start over with --force")
        with torch.no_grad():
            for name, p in self.trained.named_parameters():
                if name in state["trainable"]:
                    p.copy_(state["trainable"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        for key in LOOP_STATE:
            setattr(self, key, state[key])

    # ------------------------------------------------------------------ the loop
    def train(self) -> None:
        epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        for epoch in range(epochs):
            self.logits_model.train()
            for position, batch_idx in enumerate(_batches(len(self.splits.train), self.cfg.batch_size,
                                                          self.cfg.seed, epoch)):
                if epoch * self.steps_per_epoch + position < self.step:
                    continue  # done before the resume: the order is a pure function of (seed, epoch)
                if self.step >= self.total_steps:
                    break
                self.train_step(batch_idx, epoch)
            if any(h["epoch"] == epoch for h in self.history):
                continue  # evaluated before an interruption
            stop = self.evaluate_epoch(epoch, epochs)
            self.checkpoint()
            if stop:
                break

    def train_step(self, batch_idx: np.ndarray, epoch: int) -> None:
        tick = time.perf_counter()
        per_process = max(1, self.cfg.batch_size // self.accelerator.num_processes)
        rank = self.accelerator.process_index
        local = batch_idx[rank * per_process : (rank + 1) * per_process]
        if len(local) == 0:  # a short last batch: every process must still step together
            local = batch_idx[:1]
        train = self.splits.train
        inputs, targets = self.task.batch(self.loaded, train, local, self.recipe.data.max_length)
        loss = self.task.loss(self.logits_model(**inputs), targets)
        self.accelerator.backward(loss + self.proximal.penalty(self.trained))
        self.train_rss = max(self.train_rss, _rss_bytes())  # activations and gradients are alive here
        self.proximal.apply_selective(self.trained)
        self.accelerator.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.curve.append(round(loss.item(), 6))
        self.step_times.append(time.perf_counter() - tick)
        self.progress("train", self.step, self.total_steps, {"loss": self.curve[-1], "epoch": epoch})
        if self.step % self.cfg.checkpoint_every == 0:
            self.checkpoint()

    def evaluate_epoch(self, epoch: int, epochs: int) -> bool:
        """Validation metrics of the epoch; keeps the best state; True when early stopping says stop."""
        metrics = self.task.evaluate(self.logits_model, self.loaded, self.splits.validation, self.recipe.data.max_length)
        metrics |= {"epoch": epoch, "step": self.step, "distance_from_theta0": self.proximal.distance(self.trained)}
        self.history.append(metrics)
        self.progress("evaluate", epoch + 1, epochs, metrics)
        if self.task.better(metrics, self.best):
            self.best, self.best_state, self.stale = metrics, _trainable_state(self.trained), 0
            return False
        self.stale += 1
        return self.cfg.early_stopping_patience > 0 and self.stale >= self.cfg.early_stopping_patience

    def checkpoint(self) -> None:
        if not self.accelerator.is_main_process:
            return
        (self.out / CHECKPOINTS).mkdir(exist_ok=True)  # again: a folder deleted mid-run costs no work
        state = {"trainable": _trainable_state(self.trained), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "rng": torch.get_rng_state(), "complete": True,
                 "recipe": _what_trains(self.recipe), **{key: getattr(self, key) for key in LOOP_STATE}}
        save_checkpoint(state, self.out / CHECKPOINTS / f"step-{self.step}.pt")
        prune_checkpoints(self.out)

    # ------------------------------------------------------------------ the end
    def finish(self) -> RunResult:
        """The best state back in place, the test split, the linearization gap, and the run folder."""
        with torch.no_grad():
            for name, p in self.trained.named_parameters():
                if name in self.best_state:
                    p.copy_(self.best_state[name])
        self.logits_model.eval()
        max_length = self.recipe.data.max_length
        test = self.task.evaluate(self.logits_model, self.loaded, self.splits.test, max_length)
        extra = self.task.after_training(self.logits_model, self.loaded, self.splits, self.recipe, self.at_theta0)
        generations = extra.pop("generations", None)
        test |= {k: v for k, v in extra.items() if k != "forgetting"}
        gap = _gap(self.task, self.loaded, self.logits_model, self.trained, self.proximal, self.splits.validation,
                   max_length)
        optimizer_bytes = sum(t.numel() * t.element_size() for s in self.optimizer.state.values()
                              for k, t in s.items() if torch.is_tensor(t) and k != "step")
        metrics = {
            "head_init": self.head_report,
            "validation_best": self.best, "test": test, "history": self.history, "loss_curve": self.curve,
            "steps": self.step, "trainable_parameters": sum(p.numel() for p in self.params),
            "optimizer_state_bytes": optimizer_bytes,
            "distance_from_theta0": self.proximal.distance(self.trained), **gap,
            "seconds_per_step_median": float(np.median(self.step_times)) if self.step_times else None,
            "wall_seconds": time.perf_counter() - self.started,
            "peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "peak_train_step_rss_bytes": self.train_rss,  # the peak above also covers loading and evaluation
            "processes": self.accelerator.num_processes,
            "provenance": self.provenance,
            "label_names": list(self.splits.train.label_names),  # export names the classes with them
        }
        if "forgetting" in extra:
            metrics["forgetting"] = extra["forgetting"]
        if self.accelerator.is_main_process:
            _write_run(self.out, self.recipe, self.trained, metrics, generations)
        self.accelerator.wait_for_everyone()
        return RunResult(self.out, metrics)


def _what_trains(recipe: Recipe) -> dict:
    """The parts of a recipe that decide the run (a resume must not change them), without
    evidence, and without fields at their defaults (a setting added in a later version
    must not make older checkpoints look foreign); a data path compares as resolved."""
    document = recipe.model_dump(mode="json", exclude_defaults=True, by_alias=True)
    source = Path(recipe.data.source).expanduser()
    if source.exists():
        document.setdefault("data", {})["source"] = str(source.resolve())
    return {key: document.get(key) for key in ("model", "data", "method", "targets", "proximal", "training")}


def _first_difference(old, new, path: str = "") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{path}.{key}" if path else key)
    return path or "the recipe"


def _gap(task, loaded, logits_model, trained, proximal, split, max_length: int, examples: int = 64) -> dict:
    """Linearization gap on the first validation examples (dropout off)."""
    batch = task.batch(loaded, split, range(min(examples, len(split))), max_length)[0]
    wrapper = logits_model.module if hasattr(logits_model, "module") else logits_model
    current = {models.wrapped_name(n): p for n, p in trained.named_parameters() if p.requires_grad}
    start = {models.wrapped_name(n): proximal.theta0[n] for n, _ in trained.named_parameters() if n in proximal.theta0}
    try:
        return linearization_gap(wrapper, current, start, batch)
    except RuntimeError as exc:  # forward AD not implemented for some kernel: report, don't fail the run
        return {"linearization_gap": None, "linearization_error": str(exc).splitlines()[0]}


def _write_run(out: Path, recipe: Recipe, trained, metrics: dict, generations: list | None) -> None:
    adapter = out / "adapter"
    write_folder_atomically(adapter, lambda folder: get_method(recipe.method).save(trained, folder, recipe),
                            force=True, marker="adapter_config.json", what="adapter")
    if generations is not None:  # greedy completions of test prompts, to read next to the metrics
        write_text_atomically(out / "generations.jsonl", "".join(json.dumps(g, ensure_ascii=False) + "\n"
                                                                  for g in generations))
    save_recipe(recipe, out / "recipe.yaml", command=f"ntk-advisor train {out / 'recipe.yaml'} --out {out}")
    write_text_atomically(out / "metrics.json", json.dumps(metrics | {"recipe": recipe_to_dict(recipe)}, indent=2,
                                                        default=float) + "\n")
