"""validate(): does the advice predict fine-tuning results on the user's own task?

One profile, shared by every placement. K placements at one budget: the advised one for
every objective, every named baseline, and seeded random ones to fill K. Each is trained with
the same settings and seeds; its predicted figures (from the profile, docs/method.md §6) sit next
to the measured ones, and rank correlations with bootstrap intervals (correlate.py) say
whether a predictor orders placements as fine-tuning does. ``lambdas`` adds [LIN]'s sweep:
one placement trained at each proximal strength next to its fully linear model.

The folder (every file written whole, so an interrupted study resumes where it stopped):

    settings.json                what was asked; a rerun with other settings is refused
    profile/                     the shared profile (an `ntk-advisor profile` folder)
    plan.json                    placements and their predicted figures
    runs/<placement>/seed-<s>/   one `train` run folder each; finished ones are not redone
    sweep/lambda-<λ>/            the λ sweep's runs; sweep/linear.json the linear model
    validate.json                measured next to predicted, correlations, ranking, sweep
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

from .._io import check_replaceable, json_safe, read_json, refuse_links, write_json
from ..advice.recommend import (
    RecommendConfig,
    resolve_allocation,
    build_recipe,
    capture,
    place,
    predicted_report,
    search_ridge,
    training_fields,
    weight_budget,
)
from ..errors import RecipeError, ValidateError
from ..methods import Placement, part_from_json, part_to_json
from ..ntk.select import OBJECTIVES
from ..profiling.folder import load_profile, save_profile
from ..recipe.schema import Training
from .config import ValidateConfig, arm_names, random_arm_seed
from .summary import summarize

Progress = Callable[[str, int, int], None]
STUDY_ENTRIES = ("settings.json", "profile", "plan.json", "runs", "sweep", "validate.json")



def _canonical(placement: Placement, method: str) -> str:
    return json.dumps([method, sorted((m, part_to_json(part)) for m, part in placement.items())], sort_keys=True)


def build_plan(profile_dir: Path, config: ValidateConfig, progress: Progress) -> dict:
    """K distinct placements at the budget and what the profile predicts for each."""
    profile = load_profile(profile_dir)
    captured = capture(profile)
    base = resolve_allocation(RecommendConfig(method=config.method, budget=config.budget, proximal=config.proximal,
                                              seed=config.seed, allocation=config.allocation))
    budget, head, biases = weight_budget(captured, base)
    ridge = search_ridge(captured, config.proximal)
    wanted = len(config.arms) or config.placements or 1  # the sweep alone still needs the advised placement
    plan, seen, duplicates = {}, {}, {}
    candidates = arm_names(config.method, config.labelled)
    if config.arms:
        named = {c[0]: c for c in candidates}
        candidates = [named.get(a, (a, "random", config.method)) for a in config.arms]
    random_seeds = iter(range(1, 10 * wanted + 10))
    while len(plan) < wanted:
        if not candidates:
            if config.arms:
                break  # named arms that coincide are recorded as duplicates, not replaced
            extra = next(random_seeds, None)  # seeded random placements fill K
            if extra is None:
                raise ValidateError(f"--placements {config.placements} is more than the {len(plan)} distinct "
                                    f"placements that fit a budget of {config.budget}: lower --placements")
            candidates.append((f"random-{extra}", "random", config.method))
        name, kind, method = candidates.pop(0)
        if random_arm_seed(name):
            settings = replace(base, placement="random", seed=config.seed + random_arm_seed(name))
        else:
            settings = replace(base, method=method, **({"objective": kind} if kind in OBJECTIVES
                                                       else {"placement": kind}))
        try:
            placement, scores, search = place(captured, settings, budget, ridge)
        except RecipeError:
            if name.startswith("lora-qv") and method != config.method:
                continue  # a model without query/value modules simply has no cross-method arm
            raise
        key = _canonical(placement, method)
        if key in seen:
            duplicates[name] = seen[key]
            continue
        seen[key] = name
        entry = {"name": name, "method": method, "kind": "advised" if name.startswith("advised") else "baseline",
                 "objective": settings.objective if name.startswith("advised") else None,
                 "placement": {m: part_to_json(part) for m, part in placement.items()}, "scores": scores}
        training = Training(**training_fields(_recommend_config(config, entry, config.seed), profile.settings))
        plan[name] = entry | {"predicted": predicted_report(captured, placement, method, ridge, training)}
        progress("placements", len(plan), wanted)
    return {"budget": budget, "head": head, "head_module": captured.head_name, "biases": biases, "ridge": ridge,
            "placements": plan, "duplicates": duplicates}


def _as_placement(stored: dict) -> Placement:
    """plan.json's placement, typed again (0.1 studies' [axis, indices] and bare ranks read too)."""
    return {m: part_from_json(value) for m, value in stored.items()}


def _recommend_config(config: ValidateConfig, entry: dict, seed: int, strength: float | None = None,
                      mode: str = "selective") -> RecommendConfig:
    """What `recommend` would have been asked for this placement: its training section follows
    (training_fields). A baseline trains at PEFT's α = r where advised SFT LoRA trains under
    rsLoRA, and the allocation decides that for the advised arms. (Plans from before entries
    carried their name: a baseline's name only has to differ from "advised".)"""
    placement = "advised" if entry["kind"] == "advised" else entry.get("name", "baseline")
    return resolve_allocation(RecommendConfig(method=entry["method"], budget=config.budget, seed=seed,
                                              proximal=config.proximal if strength is None else strength,
                                              proximal_mode=mode, placement=placement, allocation=config.allocation,
                                              training=config.training(seed)))


def _recipe(settings: dict, config: ValidateConfig, entry: dict, seed: int, strength: float, mode: str,
            head_module: str | None = None):
    rec_config = _recommend_config(config, entry, seed, strength, mode)
    placement = _as_placement(entry["placement"])
    return build_recipe(settings, rec_config, placement, entry["scores"], {"validate": entry["predicted"]}, head_module)


def _train_once(recipe, folder: Path, progress: Progress, device: str = "auto") -> dict:
    """A finished run is read back; a started one resumes from its checkpoint; else it starts."""
    from ..training.checkpoints import latest_checkpoint
    from ..training.loop import train

    metrics_path = folder / "metrics.json"
    if metrics_path.exists():
        return read_json(metrics_path)
    resume = folder.exists() and latest_checkpoint(folder)[0] is not None
    result = train(recipe, folder, resume=resume, force=not resume, device=device,
                   on_progress=lambda stage, done, total, _: progress("current run", done, total)
                   if stage == "train" else None)
    return json.loads(json.dumps(result.metrics, default=float))


def _read_json(path: Path):
    return read_json(path) if path.exists() else None


def _as_stored(config: ValidateConfig) -> dict:
    return json.loads(json.dumps(json_safe(asdict(config))))  # as it reads back: tuples become lists


def _check_settings(out: Path, config: ValidateConfig, force: bool) -> dict:
    wanted = _as_stored(config)
    if out.is_dir():
        refuse_links(out, "validate study", ValidateError)
    stored = _read_json(out / "settings.json")
    if stored is not None:  # a study from before a setting existed ran with that setting's default
        stored = _as_stored(ValidateConfig()) | stored
    if stored is not None and stored != wanted and not force:
        changed = sorted(k for k in wanted if stored.get(k) != wanted[k])
        raise ValidateError(f"'{out}' holds a study with other settings ({', '.join(changed)}): rerun with the same "
                            "settings to resume, pass --force to start over, or choose another --out")
    if stored is not None and force:
        import shutil

        check_replaceable(out, marker="settings.json", entries=STUDY_ENTRIES, what="validate study")
        shutil.rmtree(out)
    return wanted


def validate(config: ValidateConfig, out: str | Path, force: bool = False, on_progress: Progress | None = None,
             device: str = "auto", shard: tuple[int, int] = (0, 1)) -> dict | None:
    """Run (or resume) the study in ``out`` on ``device``; returns the validate.json document.

    The device is not a setting of the study: a study started on one resumes on another.
    ``shard`` = (i, P) splits the runs over P processes that share ``out`` (a file system):
    shard 0 profiles and plans, the others wait for plan.json; each trains every P-th run;
    shard 0 waits for every run's metrics.json, then writes validate.json and returns it (the
    others return None). Training is deterministic, so the study is the one a single process
    writes, and a rerun of any shard resumes its runs from their checkpoints."""
    index, count = shard
    if not 0 <= index < count:
        raise ValidateError(f"--shard {index}/{count}: the shard must be 0 to {count - 1} of {count}")
    if index and force:
        raise ValidateError("--force starts the study over: pass it to shard 0 only")
    config.check()
    progress = on_progress or (lambda *a: None)
    out = Path(out)
    if index == 0:
        plan = _profile_and_plan(out, config, force, progress, device)
    else:
        plan = _wait_for_plan(out, config, progress)
    settings = load_profile(out / "profile").settings
    jobs = _jobs(out, config, plan)
    results = {}
    mine = jobs[index::count]
    for done, (folder, entry, seed, strength, mode) in enumerate(mine):
        progress("runs", done, len(mine))
        recipe = _recipe(settings, config, entry, seed, strength, mode, plan.get("head_module"))
        results[folder] = _train_once(recipe, folder, progress, device)
    progress("runs", len(mine), len(mine))
    if index:
        return None
    others = [job[0] for job in jobs if job[0] not in results]
    while others:  # the other shards' runs: read back once each has its metrics.json
        progress("runs of other shards", len(jobs) - len(others), len(jobs))
        time.sleep(SHARD_POLL_SECONDS)
        others = [folder for folder in others if not (folder / "metrics.json").exists()]
    results = {job[0]: read_json(job[0] / "metrics.json") if job[0] not in results else results[job[0]]
               for job in jobs}
    advised = _advised_entry(plan)
    document = summarize(config, plan, {k.relative_to(out).as_posix(): v for k, v in results.items()},
                         _linear_sweep(out, config, settings, advised, progress, device) if config.lambdas else None)
    write_json(out / "validate.json", document)
    return document


SHARD_POLL_SECONDS = 2.0


def _profile_and_plan(out: Path, config: ValidateConfig, force: bool, progress: Progress, device: str) -> dict:
    from ..profiling.profiler import ProfileConfig, profile

    wanted = _check_settings(out, config, force)
    profile_dir = out / "profile"
    if not (profile_dir / "profile.json").exists():
        result = profile(ProfileConfig(model=config.model, data=config.data, task=config.task,
                                       text_column=config.text_column,
                                       label_column=config.label_column, samples=config.samples,
                                       max_length=config.max_length, seed=config.seed, head=config.head,
                                       device=device),
                         on_progress=progress)
        save_profile(result, profile_dir, force=True)
    write_json(out / "settings.json", wanted)  # only once the study has a profile: no empty leftovers
    plan = _read_json(out / "plan.json")
    if plan is None:
        plan = build_plan(profile_dir, config, progress)
        write_json(out / "plan.json", plan)
    return plan


def _wait_for_plan(out: Path, config: ValidateConfig, progress: Progress) -> dict:
    """A shard other than 0: shard 0's plan, once it is written, for the same settings."""
    progress("waiting for shard 0's plan", 0, 1)
    while not (out / "plan.json").exists():
        time.sleep(SHARD_POLL_SECONDS)
    stored = _as_stored(ValidateConfig()) | read_json(out / "settings.json")
    wanted = _as_stored(config)
    if stored != wanted:
        changed = sorted(k for k in wanted if stored.get(k) != wanted[k])
        raise ValidateError(f"'{out}' holds a study with other settings ({', '.join(changed)}): start every shard "
                            "with the same settings")
    progress("waiting for shard 0's plan", 1, 1)
    return read_json(out / "plan.json")


def _advised_entry(plan: dict) -> dict:
    return plan["placements"].get("advised") or next(iter(plan["placements"].values()))


def _jobs(out: Path, config: ValidateConfig, plan: dict) -> list[tuple]:
    """(run folder, placement entry, training seed, λ, proximal mode) of every run, in order."""
    jobs = []
    if config.placements:
        for name, entry in plan["placements"].items():
            is_key = name in config.key_placements
            for s in range(max(config.seeds, config.key_seeds) if is_key else config.seeds):
                jobs.append((out / "runs" / name / f"seed-{s}", entry, config.seed + s, config.proximal, "selective"))
    for lam in config.lambdas:
        jobs.append((out / "sweep" / f"lambda-{lam:g}", _advised_entry(plan), config.seed, lam, "plain"))
    return jobs


def _linear_sweep(out: Path, config: ValidateConfig, settings: dict, entry: dict, progress: Progress,
                  device: str = "auto") -> dict:
    """The fully linear model's test accuracy per λ; its kernels are computed once and cached."""
    cached = _read_json(out / "sweep" / "linear.json")
    if cached is not None and cached.get("lambdas") == [float(x) for x in config.lambdas]:
        return cached
    from ..devices import resolve_device
    from ..inputs import data as data_lib
    from ..inputs import models
    from ..training.apply import apply_recipe
    from ..training.theta0 import load_for_recipe
    from .linear_model import linear_model_accuracy, placement_kernels

    progress("linear model", 0, 1)
    recipe = _recipe(settings, config, entry, config.seed, 0.0, "plain")
    dataset = data_lib.load_dataset(recipe.data.source, recipe.data.text_column, recipe.data.label_column)
    splits = data_lib.split_dataset(dataset, seed=recipe.data.seed)
    loaded, _ = load_for_recipe(recipe, dataset.label_names, splits=splits, device=resolve_device(device))
    trained, _ = apply_recipe(loaded.backbone, recipe, loaded.head_name)
    logits_model = models.SequenceLogits(trained)
    fit = splits.train.subset(list(range(min(config.kernel_examples, len(splits.train)))))
    kernels = placement_kernels(logits_model, loaded.encode, fit.texts, splits.test.texts, config.max_length)
    accuracy = {f"{lam:g}": linear_model_accuracy(kernels, fit.labels, splits.test.labels, lam)
                for lam in config.lambdas}
    document = {"lambdas": [float(x) for x in config.lambdas], "fit_examples": len(fit),
                "test_examples": len(splits.test), "accuracy": accuracy}
    write_json(out / "sweep" / "linear.json", document)
    progress("linear model", 1, 1)
    return document
