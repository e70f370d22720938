"""Label-word profile of every Linear module of real SmolLM2-135M (issue 8's targets).

N=32 vader-movie prompts, T=64 tokens, trace output through the label-word head: wall time
of the structured route over all 211 modules (median of --repeats, warm), peak resident
memory of the process, and the reference route (vmap(jacrev)) on three modules of the same
sample, checked against the structured kernels.

    .venv/bin/python benchmarks/bench_profile_smollm2.py [--samples 32] [--max-length 64] [--repeats 3]
                                                         [--capture-mib 512]

--capture-mib is the profiler's cap on captured layer inputs and output gradients per pass
(`profile --capture-mib`); 0 captures every module in one pass. Run each setting in its own
process: the peak is the process's.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from ntk_advisor.inputs import data, models
from ntk_advisor.ntk import OutputSpec, jacobian_kernels, structured_kernels
from ntk_advisor.ntk.kernels import module_groups
from ntk_advisor.tasks import load_task_model

GIB = 2**30
CHECKED = ("model.layers.0.self_attn.q_proj", "model.layers.15.mlp.up_proj", "score")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--capture-mib", type=int, default=512)
    args = parser.parse_args()
    torch.manual_seed(0)
    dataset = data.load_dataset("vader-movie")
    splits = data.split_dataset(dataset, seed=0)
    sample = data.probe_sample(splits.train, args.samples, seed=0)
    loaded = load_task_model("smollm2-135m", 2, task="auto", label_names=dataset.label_names)
    batch = loaded.encode(sample.texts, args.max_length)
    spec = OutputSpec("trace", 2, torch.tensor(sample.labels))
    targets = models.discover_targets(loaded.backbone)
    modules = {"backbone." + t.name: loaded.backbone.get_submodule(t.name) for t in targets}
    cap = args.capture_mib * 2**20 or None
    groups = len(module_groups(modules, batch["input_ids"].numel(), spec, cap))
    times = []
    for _ in range(args.repeats + 1):  # the first pass warms caches and is not counted
        started = time.perf_counter()
        with torch.enable_grad():
            kernels = structured_kernels(loaded.logits_model, batch, modules, spec, max_group_bytes=cap)
        times.append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    weights = {"backbone." + n: ("backbone." + n + ".weight", False) for n in CHECKED}
    started = time.perf_counter()
    reference = jacobian_kernels(loaded.logits_model, batch, weights, spec, chunk_size=8)
    reference_s = time.perf_counter() - started
    worst = max(float((kernels[n].kernel - reference[n].kernel).norm() / reference[n].kernel.norm())
                for n in weights)
    capture = f"{args.capture_mib} MiB" if cap else "unlimited"
    warm = f"{statistics.median(times[1:]):.1f} s" if args.repeats else f"{times[0]:.1f} s (cold)"
    print(f"| modules | N | T (padded) | --capture-mib (passes) | structured, median of {args.repeats} warm | "
          "peak RSS | target |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {len(targets)} | {args.samples} | {batch['input_ids'].shape[1]} | {capture} ({groups}) | {warm} | "
          f"{peak / GIB:.2f} GiB | ≤ 120 s, < 4 GiB |")
    print(f"reference route on {len(CHECKED)} modules: {reference_s:.1f} s; "
          f"max relative difference to structured {worst:.1e}")


if __name__ == "__main__":
    main()
