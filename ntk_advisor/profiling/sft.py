"""profile_sft(): the profile of a causal LM for supervised fine-tuning (``profile --task sft``).

The same folder as a classifier's profile, with the generative output of
`tasks.completion` (f_n = completion log-likelihood, docs/sft.md): each module's N×N kernel
and spectrum on the probe sample, and the SFT-gradient row and column scores over M training
examples (``rows_signal`` / ``cols_signal``: ‖G[i, :]‖², ‖G[:, j]‖² of G = ∂/∂W (1/M) Σ f_n).
There are no labels, so alignment and LOO accuracy are NaN. The LM head is left out unless
``--module`` names it: adapters rarely train it, and its kernel costs R·V·H per pass.
"""

from __future__ import annotations

import time
from dataclasses import asdict

import torch

from ..devices import capture_budget_mib, check_dtype_on, free_memory_bytes, resolve_device
from ..errors import ProfileError
from ..inputs import models
from ..inputs.completions import encode_completions, load_completions
from ..inputs.dataset import probe_sample, split_dataset
from ..ntk import OutputSpec, label_gradient_scores
from ..tasks import get_task
from ..tasks.sft import check_room
from . import distributed
from .config import ProfileConfig
from .folder import NtkProfile
from .parts import kernel_summaries, library_versions, module_kernels, selected_targets

# The SFT-gradient pass's peak is its (batch, T, vocabulary) logits, their log-softmax and gradient:
# smollm2-135m at T = 128 peaked at 3.89 GiB with 16 examples a batch and 3.00 GiB with 8.
SIGNAL_BATCH = 8


def profile_sft(config: ProfileConfig, on_progress=None) -> NtkProfile | None:
    """Load the causal LM and the completions, and compute every module's kernel and SFT scores."""
    config.check()
    started, progress = time.perf_counter(), on_progress or (lambda stage, done, total: None)
    device = resolve_device(distributed.local_device(config.device))
    check_dtype_on(device, config.dtype)
    distributed.start(device)
    progress("load model", 0, 1)
    loaded = get_task("sft").load_model(config.model, getattr(torch, config.dtype))
    loaded.logits_model.to(device)
    tokenizer = loaded.tokenizer
    progress("load model", 1, 1)
    data = load_completions(config.data, tokenizer)
    cut = check_room(tokenizer, data, config.max_length, ProfileError)  # refuses when every prompt fills it
    distributed.check_same_settings(asdict(config), [data.texts, data.completions], ProfileError)
    splits = split_dataset(data, seed=config.seed)
    sample = probe_sample(splits.train, config.samples, seed=config.seed)
    targets = [t for t in selected_targets(loaded, config) if config.modules or t.role != "head"]
    batch = {k: v.to(device) for k, v in encode_completions(tokenizer, sample.texts, sample.completions,
                                                            config.max_length).items()}
    labels = torch.zeros(len(sample), dtype=torch.long)  # one "class": no alignment, no LOO accuracy
    spec = OutputSpec("trace", 1, labels)
    capture_mib = config.capture_mib or capture_budget_mib(free_memory_bytes(device), device.type)
    timing = {"load_s": time.perf_counter() - started}
    mine = distributed.my_share(targets, [float(t.num_weights) for t in targets])
    on_device = OutputSpec("trace", 1, labels.to(device))
    results = distributed.merge_on_rank0(module_kernels(loaded, batch, mine, on_device, config.route, capture_mib,
                                                        progress))
    timing["kernels_s"] = time.perf_counter() - started - timing["load_s"]
    scores = sft_gradient_scores(loaded, splits.train, config, targets, progress) if config.signal_examples else {}
    if results is None:
        return None
    summaries, total_kernel, total = kernel_summaries(targets, results, spec, labels, config)
    settings = asdict(config) | {"samples": len(sample), "num_outputs": 1, "kernel_rows": len(sample),
                                 "tokens": batch["input_ids"].shape[1], "modules": [t.name for t in targets],
                                 "capture_mib": capture_mib, "device": str(device), "task": "sft",
                                 "completion_tokens": int(batch["completion_mask"][:, 1:].sum()),
                                 "dtype": config.dtype, "label_names": [], "prompt": None}
    if scores:
        settings["signal_samples"] = min(config.signal_examples, len(splits.train))
    timing["total_s"] = time.perf_counter() - started
    return NtkProfile(
        settings=settings, modules=summaries, total=total,
        kernels={**{n: r.kernel for n, r in results.items()}, "total": total_kernel},
        scores={"rows": {n: r.row_energy for n, r in results.items()},
                "cols": {n: r.col_energy for n, r in results.items()}} | scores,
        inputs={k: v.cpu() for k, v in batch.items()} | {"labels": labels},
        head={}, versions=library_versions(), timing=timing,
        warnings=_warnings(batch) + ([f"{cut} of the {len(data)} examples keep no completion token within "
                                      f"--max-length {config.max_length}: raise it to train on them"] if cut else []),
        head_report={"kind": "causal LM head (SFT)"})


def _warnings(batch: dict) -> list[str]:
    found = ["supervised fine-tuning has no labels: alignment and LOO accuracy are undefined (docs/sft.md)"]
    empty = int((batch["completion_mask"][:, 1:].sum(1) == 0).sum())
    if empty:
        found.append(f"{empty} of the {batch['input_ids'].shape[0]} probe examples keep no completion token within "
                     "--max-length (their prompts fill it): raise --max-length")
    return found


def sft_gradient_scores(loaded, train, config: ProfileConfig, targets, progress) -> dict:
    """Row and column scores of G = ∂/∂W (1/M) Σ_n f_n over M = min(signal_samples, |train|)
    training examples (the label-gradient scores of `ntk.signal` with every target 1)."""
    sample = train if config.signal_examples >= len(train) else probe_sample(train, config.signal_examples,
                                                                            seed=config.seed)
    weights = {t.name: (loaded.backbone.get_submodule(t.name).weight, t.transposed) for t in targets}
    groups = distributed.my_share(models.length_batches(list(sample.texts), SIGNAL_BATCH))

    def batches():
        for group in groups:
            inputs = encode_completions(loaded.tokenizer, [sample.texts[i] for i in group],
                                        [sample.completions[i] for i in group], config.max_length,
                                        require_completion=False)  # G is a sum: an empty batch adds nothing
            yield {k: v.to(loaded.device) for k, v in inputs.items()}, torch.ones(len(group), 1, device=loaded.device)

    found = label_gradient_scores(loaded.logits_model, batches(), weights, lambda outputs: outputs, len(sample),
                                  on_progress=progress, total_batches=len(groups),
                                  reduce_sums=distributed.sum_over_processes())
    return {"rows_signal": {n: v.rows.cpu() for n, v in found.items()},
            "cols_signal": {n: v.cols.cpu() for n, v in found.items()},
            "signal_spectrum": {n: v.spectrum.cpu() for n, v in found.items()}}
