"""profile(): the empirical NTK of every Linear module of a model on a probe sample.

The library never prints. Progress goes through ``on_progress(stage, done, total)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict

import numpy as np
import torch

from ..devices import capture_budget_mib, check_dtype_on, free_memory_bytes, resolve_device
from ..errors import ProfileError
from ..inputs import data as data_lib
from ..inputs import models
from ..inputs.head_features import head_inputs
from ..ntk import (
    OutputSpec,
    label_gradient_scores,
)
from ..tasks import get_task, load_task_model
from . import distributed
from .config import ProfileConfig
from .folder import NtkProfile
from .parts import kernel_summaries, library_versions, module_kernels, selected_targets

Progress = Callable[[str, int, int], None]


def fit_probe_head(loaded: models.LoadedModel, train, validation, *, seed: int, examples: int, max_length: int,
                   exclude: frozenset[str] = frozenset()) -> dict:
    """Fit the new head as a logistic-regression probe on frozen features; load it in place.

    Binary tasks: sklearn gives one direction w; the 2-logit head gets (−w/2, +w/2) so that
    f1 − f0 = w·h + b exactly as the probe. Returns the probe's validation accuracy.
    """
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    pool = [i for i in range(len(train)) if train.texts[i] not in exclude]
    chosen = sorted(rng.permutation(pool)[:examples].tolist())
    fit_set = train.subset(chosen)
    val_set = validation.subset(list(range(min(len(validation), examples))))
    if len(set(fit_set.labels)) < 2:  # the probe set's texts are held out of the head's fit
        left = f"{len(pool)} training texts are" if len(pool) != 1 else "1 training text is"
        distinct = len(set(train.texts))
        why = (f" (the training split holds only {distinct} distinct texts)" if distinct < len(train) / 2
               else " (a single class)" if pool else "")
        raise ProfileError(f"the probe head is fit on training texts outside the --samples set, and {left} "
                           f"left{why}: use a smaller --samples, more data, or --head random")
    if not len(val_set):
        raise ProfileError("the validation split is empty, so the probe head cannot be checked: use more data or "
                           "--head random")
    features = {}
    for split_name, split in (("fit", fit_set), ("validation", val_set)):
        features[split_name] = _head_features(loaded, list(split.texts), max_length).to(torch.float64).numpy()
    probe = LogisticRegression(max_iter=2000, C=1.0)
    probe.fit(features["fit"], np.asarray(fit_set.labels))
    coef, intercept = torch.from_numpy(probe.coef_), torch.from_numpy(probe.intercept_)
    if coef.shape[0] == 1:  # binary
        coef = torch.cat([-coef / 2, coef / 2])
        intercept = torch.cat([-intercept / 2, intercept / 2])
    head = loaded.backbone.get_submodule(loaded.head_name)
    with torch.no_grad():
        head.weight.copy_(coef.to(head.weight.dtype))
        if head.bias is not None:
            head.bias.copy_(intercept.to(head.bias.dtype))
    accuracy = float(probe.score(features["validation"], np.asarray(val_set.labels)))
    return {"kind": "probe", "fit_examples": len(fit_set), "validation_accuracy": accuracy,
            "validation_examples": len(val_set)}


def _set_up_head(loaded: models.LoadedModel, head: str, config: ProfileConfig, splits, sample,
                 warnings: list[str], progress: Progress) -> dict:
    """θ0's head as ``head`` asks (a probe fit, or the label words' rows), and its report."""
    report: dict = {"kind": head}
    if loaded.prompt is not None:
        report |= {"template": loaded.prompt.template, "label_words": list(loaded.prompt.label_words)}
    if head == "label-words":
        progress("zero-shot accuracy", 0, 1)
        report |= zero_shot_accuracy(loaded, splits.validation, config.max_length)
        progress("zero-shot accuracy", 1, 1)
    if head != "probe":
        return report
    if loaded.head_name is None:
        warnings.append("the model has no new head to fit: profiling the checkpoint's own head")
        return report
    progress("fit head", 0, 1)
    report = fit_probe_head(loaded, splits.train, splits.validation, seed=config.seed,
                            examples=config.head_train_examples, max_length=config.max_length,
                            exclude=frozenset(sample.texts))
    progress("fit head", 1, 1)
    if not any(p.abs().max() > 0 for p in loaded.backbone.get_submodule(loaded.head_name).parameters()):
        warnings.append("the probe came out exactly zero (the frozen features do not separate the classes), "
                        "so every kernel through the head is zero: profile with --head random")
    return report


def _head_features(loaded: models.LoadedModel, texts: list[str], max_length: int) -> torch.Tensor:
    """`head_features.head_inputs`, each process taking every P-th of the same length-sorted batches
    (the batches one process would form, so the features are the same to the bit)."""
    if distributed.world() == 1:
        return head_inputs(loaded, texts, max_length)
    mine = distributed.my_share(models.length_batches(texts, 64))
    parts = distributed.gather_to_all((mine, head_inputs(loaded, texts, max_length, batches=mine)))
    width = max(part.shape[1] for _, part in parts)
    features = torch.zeros(len(texts), width, dtype=next(part for _, part in parts if len(part)).dtype)
    for share, part in parts:
        if len(part):
            features[[i for batch in share for i in batch]] = part
    return features


@torch.no_grad()
def zero_shot_accuracy(loaded: models.LoadedModel, validation, max_length: int, examples: int = 256,
                       batch_size: int = 32) -> dict:
    """Accuracy of the untrained prompt (argmax over label words) on the first validation examples."""
    count = min(examples, len(validation))
    correct = 0
    for start in range(0, count, batch_size):
        texts = validation.texts[start : min(start + batch_size, count)]
        predicted = loaded.logits_model(**loaded.encode(texts, max_length)).argmax(-1).cpu()
        correct += int((predicted == torch.tensor(validation.labels[start : start + len(texts)])).sum())
    return {"validation_accuracy": correct / count, "validation_examples": count}


def profile(config: ProfileConfig, on_progress: Progress | None = None) -> NtkProfile | None:
    """Load model and data, fit or keep the head, and compute every module's kernel and spectra.

    Started by torchrun with several processes, the work is split over them (`distributed`)
    and rank 0 returns the profile; the other processes return None."""
    config.check()
    if config.task == "sft":  # a causal LM on completions: profiling/sft.py
        from .sft import profile_sft

        return profile_sft(config, on_progress)
    models.resolve_model_source(config.model)  # a bad model name fails before minutes of data work
    device = resolve_device(distributed.local_device(config.device))  # so does a device this machine lacks
    check_dtype_on(device, config.dtype)
    distributed.start(device)
    started = time.perf_counter()
    progress = on_progress or (lambda stage, done, total: None)
    dataset = data_lib.load_dataset(config.data, config.text_column, config.label_column)
    distributed.check_same_settings(asdict(config), [dataset.texts, dataset.labels], ProfileError)
    splits = data_lib.split_dataset(dataset, seed=config.seed)
    sample = data_lib.probe_sample(splits.train, config.samples, seed=config.seed)
    progress("load model", 0, 1)
    loaded = load_task_model(config.model, dataset.num_classes, task=config.task, seed=config.seed,
                             dtype=getattr(torch, config.dtype), template=config.template,
                             label_words=config.label_words or None, label_names=dataset.label_names)
    loaded.logits_model.to(device)
    head = config.head if config.head != "auto" else get_task(loaded.task).default_head
    if head == "label-words" and loaded.prompt is None:
        raise ProfileError("--head label-words needs label-word prompting: use a decoder-only model or --task "
                           "label-words")
    progress("load model", 1, 1)
    timing = {"load_s": time.perf_counter() - started}
    warnings: list[str] = []
    head_report = _set_up_head(loaded, head, config, splits, sample, warnings, progress)
    timing["head_s"] = time.perf_counter() - started - timing["load_s"]
    batch = loaded.encode(sample.texts, config.max_length)
    labels = torch.tensor(sample.labels, dtype=torch.long)
    result = profile_model(loaded, batch, labels, config, progress, timing, warnings)
    if config.signal_examples:
        started_signal = time.perf_counter()
        names = [t.name for t in selected_targets(loaded, config)]
        scores = label_signal(loaded, splits.train, config, names, result.warnings if result else [], progress)
        if result is None:  # a process other than rank 0: its share is in rank 0's result
            return None
        result.scores |= scores
        if scores:
            result.settings["signal_samples"] = min(config.signal_examples, len(splits.train))
        result.timing["signal_s"] = time.perf_counter() - started_signal
    if result is None:
        return None
    result.settings.update({"model": config.model, "data": config.data, "task": loaded.task, "text_column": config.text_column,
                            "label_column": config.label_column, "label_names": list(dataset.label_names),
                            "prompt": ({"template": loaded.prompt.template,
                                        "label_words": list(loaded.prompt.label_words)} if loaded.prompt else None)})
    result.head_report = head_report
    result.timing["total_s"] = time.perf_counter() - started
    return result


def profile_model(loaded: models.LoadedModel, batch: dict, labels: torch.Tensor, config: ProfileConfig,
                  progress: Progress, timing: dict | None = None, warnings: list[str] | None = None
                  ) -> NtkProfile | None:
    """Kernels and summaries for an already loaded model and tokenized sample (pipelines, tests).
    Under torch.distributed each process contracts its share of the modules (`distributed`)
    and only rank 0 returns the profile; the others return None."""
    timing = dict(timing or {})
    warnings = list(warnings or [])
    targets = selected_targets(loaded, config)
    mine = distributed.my_share(targets, [float(t.num_weights) for t in targets])
    num_outputs = loaded.backbone.config.num_labels
    if config.reduction == "margin" and num_outputs != 2:
        raise ProfileError(f"--output margin needs a binary task; this one has {num_outputs} classes: use trace")
    spec = OutputSpec(config.reduction, num_outputs, labels)
    device = loaded.device
    batch = {key: value.to(device) for key, value in batch.items()}
    on_device = OutputSpec(config.reduction, num_outputs, labels.to(device))
    capture_mib = config.capture_mib or capture_budget_mib(free_memory_bytes(device), device.type)
    if not spec.defined_alignment:
        warnings.append("the probe sample holds a single class: alignment and LOO accuracy are undefined")
    t0 = time.perf_counter()
    results = distributed.merge_on_rank0(module_kernels(loaded, batch, mine, on_device, config.route, capture_mib,
                                                         progress))
    timing["kernels_s"] = time.perf_counter() - t0
    if results is None:
        return None
    broken = [name for name, value in results.items() if not torch.isfinite(value.kernel).all()]
    if broken:
        raise ProfileError(f"the kernels of {len(broken)} module(s) have NaN or Inf entries (first: '{broken[0]}'): "
                           "the model or the inputs overflow; check the weights, or try --dtype float64")
    summaries, total_kernel, total = kernel_summaries(targets, results, spec, labels, config)
    timing["summaries_s"] = time.perf_counter() - t0 - timing["kernels_s"]
    settings = asdict(config)
    settings.update({"samples": int(labels.shape[0]), "num_outputs": num_outputs, "dtype": str(
        next(loaded.backbone.parameters()).dtype).removeprefix("torch."), "kernel_rows": spec.kernel_size,
        "tokens": batch["input_ids"].shape[1], "modules": [t.name for t in targets], "capture_mib": capture_mib,
        "device": str(device)})
    if distributed.world() > 1:
        settings["distributed"] = {"processes": distributed.world(), "probe_features": "by examples",
                                   "label_gradient": "by examples", "kernels": "by modules"}
    return NtkProfile(
        settings=settings,
        modules=summaries,
        total=total,
        kernels={**{n: r.kernel for n, r in results.items()}, "total": total_kernel},
        scores={"rows": {n: r.row_energy for n, r in results.items()},
                "cols": {n: r.col_energy for n, r in results.items()},
                "rows_alignment": {n: r.row_alignment for n, r in results.items()},
                "cols_alignment": {n: r.col_alignment for n, r in results.items()}},
        inputs={"input_ids": batch["input_ids"].cpu(), "attention_mask": batch["attention_mask"].cpu(), "labels": labels},
        head={k: v.detach().cpu().clone() for k, v in loaded.backbone.state_dict().items() if k in _rebuild_names(loaded,
                                                                                                         config)},
        versions=library_versions(),
        timing=timing,
        warnings=warnings,
    )


SIGNAL_BATCH = 32


def label_signal(loaded: models.LoadedModel, train, config: ProfileConfig, module_names: list[str],
                 warnings: list[str], progress: Progress) -> dict[str, dict[str, torch.Tensor]]:
    """Row and column label-gradient scores (ntk.signal) over M = min(signal_samples, |train|)
    training examples drawn with the profile's seed; {} with a warning for a single class."""
    sample = train if config.signal_examples >= len(train) else data_lib.probe_sample(
        train, config.signal_examples, seed=config.seed)
    spec = OutputSpec(config.reduction, loaded.backbone.config.num_labels, torch.tensor(sample.labels))
    if not spec.defined_alignment:
        warnings.append("the label-gradient sample holds a single class: no rows_signal / cols_signal scores")
        return {}
    targets = {t.name: t for t in models.discover_targets(loaded.backbone)}
    weights = {name: (loaded.backbone.get_submodule(name).weight, targets[name].transposed) for name in module_names}
    centred = spec.output_targets()
    texts = list(sample.texts)
    groups = distributed.my_share(models.length_batches(texts, SIGNAL_BATCH))  # G is a sum over examples
    batches = ((loaded.encode([texts[i] for i in group], config.max_length), centred[group].to(loaded.device))
               for group in groups)
    scores = label_gradient_scores(loaded.logits_model, batches, weights, spec.stack_outputs, len(texts),
                                   on_progress=progress, total_batches=len(groups),
                                   reduce_sums=distributed.sum_over_processes())
    broken = [name for name, value in scores.items() if not torch.isfinite(value.rows).all()]
    if broken:
        raise ProfileError(f"the label gradient of {len(broken)} module(s) has NaN or Inf entries (first: "
                           f"'{broken[0]}'): the model or the inputs overflow; check the weights, try --dtype float64, "
                           "or pass --signal-samples 0")
    return {"rows_signal": {n: v.rows.cpu() for n, v in scores.items()},
            "cols_signal": {n: v.cols.cpu() for n, v in scores.items()},
            "signal_spectrum": {n: v.spectrum.cpu() for n, v in scores.items()}}


def _rebuild_names(loaded: models.LoadedModel, config: ProfileConfig) -> set[str]:
    """Weights the checkpoint cannot give back: new ones, and a head the probe replaced."""
    names = set(loaded.new_parameter_names)
    if config.head != "random" and loaded.head_name:
        names |= {n for n, _ in loaded.backbone.get_submodule(loaded.head_name).named_parameters(prefix=loaded.head_name)}
    return names


