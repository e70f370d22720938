"""What a profile will cost, from the model's config alone: `ntk-advisor plan`.

The model is built on the meta device (no weights read or allocated), and each part of a
profile is counted in floating-point operations (2 per multiply-add) with the formulas the
profiler's own choices follow. N probe examples of T̄ active tokens, C outputs, L layers of
width H, P_lin the weights of all Linear modules, M label-gradient examples, E probe-head
examples (fit and validation):

    forward(n)      = 2·n·T̄·P_lin + 4·n·T̄²·H·L          (Linears, then QKᵀ and AV)
    probe head      = forward(E)
    kernel passes   = groups · (forward(N) + passes · forward(N))   (a backward pass to the
                      module outputs costs about one forward; frozen weights get no gradient)
    contractions    = Σ_modules passes · 2·cost of the route choose_route takes
                      (contractions.route_costs; `full` contracts its C passes' rows at once)
    label gradient  = 3 · forward(M)                      (forward, and a backward to the
                      activations and to every weight)

passes is 1 for a binary probe head (merged_head_passes) or `margin`, C otherwise. The
captures are N·T̄·Σ(d_in + d_out) floats, split into groups of at most --capture-mib
(kernels.module_groups; each further group repeats the forward and backward passes); 0, the
default, sizes the cap as the profile does, from the device's free memory less the weights
(devices.capture_budget_mib). The
kernels take (modules + 1)·R²·8 bytes. Seconds are flops over a rate: this machine's,
measured by `calibrate` (one second of float32 matrix products at the model's width), or a
device's given in TFLOP/s. The rate of a large matrix product is an upper bound on what a
whole profile sustains, so the estimate is a lower bound on the time; docs/plan.md gives the
measured ratio.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from ..devices import capture_budget_mib, free_memory_bytes, resolve_device
from ..errors import ProfileError
from ..inputs import models
from ..ntk.contractions import choose_route, route_costs
from ..ntk.kernels import module_groups
from ..ntk.targets import OutputSpec
from .config import ProfileConfig

PARTS = ("probe head", "kernel passes", "contractions", "label gradient")


@dataclass
class ProfilePlan:
    settings: dict
    flops: dict[str, float]
    memory: dict[str, float]
    groups: int
    passes: int
    routes: dict[str, int]

    def seconds(self, flops_per_second: float) -> dict[str, float]:
        return seconds_at(self.flops, flops_per_second)


def seconds_at(flops: dict[str, float], flops_per_second: float) -> dict[str, float]:
    """Each part's seconds at a sustained rate, and their total."""
    parts = {name: value / flops_per_second for name, value in flops.items()}
    return parts | {"total": sum(parts.values())}


def plan_profile(config: ProfileConfig, tokens: float | None = None, num_outputs: int = 2,
                 train_examples: int | None = None, validation_examples: int | None = None,
                 free_bytes: int | None = None, device_type: str | None = None, processes: int = 1) -> ProfilePlan:
    """Count a profile of ``config``. tokens: mean active tokens per example (default T);
    train_examples / validation_examples: the data's split sizes, which cap the probe head's
    and the label gradient's examples (default: no cap); free_bytes: the memory free on the
    device before the weights are loaded (default: what ``config.device`` has free now);
    device_type: "cpu" or "cuda" for a device that is not this machine's (sets the cap's ceiling);
    processes: P under torchrun (profiling.distributed): the figures are those of the busiest
    process, which repeats the passes, contracts its dealt share of the modules, and does 1/P
    of the probe features and of the label gradient."""
    config.check()
    if num_outputs < 2:
        raise ProfileError(f"a classifier has at least 2 outputs, got {num_outputs}: give --outputs or --data")
    model = models.meta_classifier(config.model, num_outputs, dtype=getattr(torch, config.dtype))
    encoder = models.is_bidirectional(model.config)
    targets = models.discover_targets(model)
    if config.modules:
        targets = [t for t in targets if t.name in set(config.modules)]
    mean_tokens = float(min(tokens or config.max_length, config.max_length))
    n, head = config.samples, config.head
    # merged_head_passes needs one head input per example; a decoder's head scores every token
    merged = config.reduction == "trace" and num_outputs == 2 and head in ("probe", "auto") and encoder
    passes = 1 if merged or config.reduction == "margin" else num_outputs
    spec = OutputSpec(config.reduction, num_outputs, torch.arange(n) % num_outputs)
    if processes < 1:
        raise ProfileError(f"--processes must be at least 1, got {processes}")
    every = targets
    full = config.reduction == "full"
    rows = n * (num_outputs if full else 1)
    contracted = 1 if full else passes  # `full` contracts all C passes' rows at once
    k = spec.target_weights().shape[0]
    targets = _busiest_share(targets, processes, rows, mean_tokens, k, contracted)
    modules = {t.name: model.get_submodule(t.name) for t in targets}
    bytes_per_float = getattr(torch, config.dtype).itemsize  # weights and captures are in the weights' dtype
    weights = sum(p.numel() for p in model.parameters()) * bytes_per_float
    capture_mib = config.capture_mib or _capture_cap(config, weights, free_bytes, device_type)
    groups = module_groups(modules, int(math.ceil(n * mean_tokens)), spec, capture_mib * 2**20)
    forward = _forward_flops(model, mean_tokens)
    contraction, routes = _contractions(targets, rows, mean_tokens, k, contracted)
    pool = train_examples if train_examples is not None else math.inf
    if pool < n:
        raise ProfileError(f"--samples {n} is more than the {pool} training examples: lower --samples")
    examples = min(config.signal_examples, pool)
    fit = min(config.head_train_examples, pool - n)  # the probe is fit outside the probe sample
    checked = min(config.head_train_examples, validation_examples if validation_examples is not None else math.inf)
    head_examples = fit + checked if head in ("probe", "auto") else 0
    flops = {"probe head": forward * head_examples / processes,
             "kernel passes": len(groups) * (1 + passes) * forward * n,
             "contractions": contraction,
             "label gradient": 3 * forward * examples / processes}
    capture = n * mean_tokens * sum(t.d_in + t.d_out for t in targets) * bytes_per_float
    memory = {"weights": weights,
              "captures": capture, "captures per group": capture / len(groups),
              "kernels": (len(every) + 1) * rows * rows * 8,  # all of them on rank 0 once gathered
              "scores": sum(t.d_in + t.d_out for t in every) * 8 * 3}
    settings = {"model": config.model, "hidden_size": getattr(model.config, "hidden_size", 0) or 0, "samples": n, "max_length": config.max_length, "mean_tokens": mean_tokens,
                "outputs": num_outputs, "reduction": config.reduction, "head": head, "modules": len(every), "processes": processes, "modules_per_process": len(targets),
                "signal_samples": examples, "head_examples": head_examples, "capture_mib": capture_mib, "dtype": config.dtype}
    return ProfilePlan(settings, flops, memory, len(groups), passes, routes)


def _capture_cap(config: ProfileConfig, weights: float, free_bytes: int | None, device_type: str | None) -> int:
    """The profile's capture rule (devices.capture_budget_mib) for the device planned for."""
    device = resolve_device(config.device) if free_bytes is None or device_type is None else None
    free_bytes = free_memory_bytes(device) if free_bytes is None else free_bytes
    return capture_budget_mib(max(0, free_bytes - weights), device_type or device.type)


def _contractions(targets, rows: int, mean_tokens: float, k: int, contracted: int) -> tuple[float, dict[str, int]]:
    """Flops of contracting ``targets`` by the routes `choose_route` takes, and how many take each."""
    flops, routes = 0.0, {}
    for t in targets:
        route = choose_route(rows, mean_tokens, t.d_out, t.d_in, targets=k)
        routes[route] = routes.get(route, 0) + 1
        flops += 2 * contracted * route_costs(rows, mean_tokens, t.d_out, t.d_in, targets=k)[route]
    return flops, routes


def _busiest_share(targets, processes: int, rows: int, mean_tokens: float, k: int, contracted: int) -> list:
    """The modules of the process with the most contraction work under `distributed.deal`."""
    if processes == 1:
        return targets
    from .distributed import deal

    owners = deal([float(t.num_weights) for t in targets], processes)
    shares = [[t for t, owner in zip(targets, owners) if owner == r] for r in range(processes)]
    return max(shares, key=lambda share: _contractions(share, rows, mean_tokens, k, contracted)[0])


def _forward_flops(model: torch.nn.Module, mean_tokens: float) -> float:
    """forward(1): flops of one example's forward pass (see the module docstring)."""
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)
                 or type(m).__name__ == "Conv1D")
    config = model.config
    layers = getattr(config, "num_hidden_layers", 0) or 0
    width = getattr(config, "hidden_size", 0) or 0
    return 2 * mean_tokens * linear + 4 * mean_tokens * mean_tokens * width * layers


def calibrate(width: int = 384, seconds: float = 1.0, dtype: torch.dtype = torch.float32) -> float:
    """This machine's float32 matrix-product rate in flop/s: (2048 × H) @ (H × 4H) for ``seconds``
    (H = 384 where a config names no width: the rate changes little with H above a few hundred)."""
    width = width or 384
    a, b = torch.randn(2048, width, dtype=dtype), torch.randn(width, 4 * width, dtype=dtype)
    a @ b  # warm the BLAS threads
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        a @ b
        count += 1
    return 2 * 2048 * width * 4 * width * count / elapsed


def data_facts(config: ProfileConfig, limit: int = 1000) -> dict:
    """What the data adds to a plan: classes, split sizes, and the mean tokens per example
    after truncation over the first ``limit`` training texts (the tokenizer only, no weights)."""
    from ..inputs.data import load_dataset, split_dataset

    dataset = load_dataset(config.data, config.text_column, config.label_column)
    splits = split_dataset(dataset, seed=config.seed)
    texts = list(splits.train.texts[:limit])
    tokenizer = models.load_tokenizer(models.resolve_model_source(config.model))
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=config.max_length)["input_ids"]]
    return {"num_outputs": dataset.num_classes, "train_examples": len(splits.train),
            "validation_examples": len(splits.validation), "tokens": sum(lengths) / len(lengths)}
