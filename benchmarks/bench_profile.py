"""Structured vs reference (vmap(jacrev)) profile of every Linear module of real minilm-l6.

Same process, same probe sample (vader-movie, N=64, T=32, trace output). Prints wall time
and peak memory of each route, their agreement, the scaling of the structured route in N and
in the number of modules, where its time goes, and ends with `speedup <ratio>x`.

--head probe (the profile's default) fits the binary head as `profile` does, rows (−w/2,
+w/2): rank 1, so the structured route needs one backward pass instead of two
(`merged_head_passes`). --head random keeps a seeded random head of rank 2: two passes.
The reference route differentiates both outputs either way.

    .venv/bin/python benchmarks/bench_profile.py [--samples 64] [--max-length 32] [--repeats 5]
                                                 [--reference-repeats 2] [--head probe|random]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _memory import peak_rss  # noqa: E402

from ntk_advisor.inputs import data, models  # noqa: E402
from ntk_advisor.ntk import OutputSpec, jacobian_kernels, structured_kernels  # noqa: E402
from ntk_advisor.ntk.contractions import GradientBuffer, active_tokens, contract, route_costs  # noqa: E402
from ntk_advisor.ntk.kernels import bucketed_inputs, module_passes  # noqa: E402
from ntk_advisor.profiling.profiler import PROBE_HEAD_EXAMPLES, fit_probe_head  # noqa: E402

GIB = 2**30


def structured(loaded, batch, spec, targets):
    modules = {"backbone." + t.name: loaded.backbone.get_submodule(t.name) for t in targets}
    with torch.enable_grad():
        return structured_kernels(loaded.logits_model, batch, modules, spec)


def reference(loaded, batch, spec, targets):
    weights = {"backbone." + t.name: ("backbone." + t.name + ".weight", t.transposed) for t in targets}
    return jacobian_kernels(loaded.logits_model, batch, weights, spec, chunk_size=16)


def timed(fn, *args):
    record: dict = {}
    with peak_rss(record):
        start = time.perf_counter()
        result = fn(*args)
        record["seconds"] = time.perf_counter() - start
    return result, record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="structured runs before each reference run")
    parser.add_argument("--reference-repeats", type=int, default=2)
    parser.add_argument("--head", choices=("probe", "random"), default="probe")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    splits = data.split_dataset(data.load_dataset("vader-movie"), seed=0)
    sample = data.probe_sample(splits.train, args.samples, seed=0)
    loaded = models.load_classifier("minilm-l6", num_labels=2, seed=0)
    if args.head == "probe":
        fit_probe_head(loaded, splits.train, splits.validation, seed=0, examples=PROBE_HEAD_EXAMPLES,
                       max_length=args.max_length, exclude=frozenset(sample.texts))
    batch = models.encode(loaded.tokenizer, sample.texts, args.max_length)
    batch = {k: v[:, : args.max_length] for k, v in batch.items()}
    spec = OutputSpec("trace", 2, torch.tensor(sample.labels))
    targets = models.discover_targets(loaded.backbone)
    print(f"minilm-l6, {len(targets)} Linear modules, N={args.samples}, T={batch['input_ids'].shape[1]}, "
          f"{torch.get_num_threads()} threads, {args.head} head")

    for _ in range(2):  # warm-up: first-call allocations and kernels
        structured(loaded, batch, spec, targets)
    # This machine's speed drifts by up to 2x over minutes, so the routes alternate: each
    # reference run is compared with the structured runs just before it.
    runs, slow_recs, ratios = [], [], []
    for _ in range(args.reference_repeats):
        block = [timed(structured, loaded, batch, spec, targets) for _ in range(args.repeats)]
        slow, slow_rec = timed(reference, loaded, batch, spec, targets)
        runs += block
        slow_recs.append(slow_rec)
        ratios.append(slow_rec["seconds"] / statistics.median(r["seconds"] for _, r in block))
    fast, _ = runs[-1]
    fast_s = statistics.median(r["seconds"] for _, r in runs)
    # Absolute RSS only from the runs before any reference run: the allocator keeps what the
    # reference freed, so later readings say more about the heap than about the route.
    fast_peak = max(r["peak_bytes"] for _, r in runs[:args.repeats])
    slow_s = statistics.median(r["seconds"] for r in slow_recs)
    worst = max(float((fast[k].kernel - slow[k].kernel).norm() / slow[k].kernel.norm()) for k in fast)

    print(f"{'route':<12}{'wall s':>10}{'peak RSS GiB':>14}{'added GiB':>11}")
    print(f"{'structured':<12}{fast_s:>10.2f}{fast_peak / GIB:>14.2f}{max(r['added_bytes'] for _, r in runs) / GIB:>11.2f}"
          f"   (median of {len(runs)}, warm; peak before any reference run)")
    print(f"{'reference':<12}{slow_s:>10.2f}{max(r['peak_bytes'] for r in slow_recs) / GIB:>14.2f}"
          f"{max(r['added_bytes'] for r in slow_recs) / GIB:>11.2f}   (median of {len(slow_recs)})")
    print(f"max relative difference of module kernels (float32 model): {worst:.1e}")

    # Subsets keep the head (the last target): without it a rank-1 head cannot merge passes.
    print("\nscaling of the structured route (median of 3, warm; the first k − 1 modules and the head)")
    print(f"{'N':>5}{'modules':>9}{'wall s':>9}")
    for n, k in [(16, len(targets)), (32, len(targets)), (64, len(targets)), (64, len(targets) // 2),
                 (64, len(targets) // 4)]:
        sub = {key: v[:n] for key, v in batch.items()}
        sub_spec = OutputSpec("trace", 2, spec.labels[:n])
        chosen = targets[:k - 1] + targets[-1:]
        times = [timed(structured, loaded, sub, sub_spec, chosen)[1]["seconds"] for _ in range(3)]
        print(f"{n:>5}{k:>9}{statistics.median(times):>9.2f}")
    passes_s, flops, peak = breakdown(loaded, batch, spec, targets)
    print(f"ceiling of this algorithm here: the passes plus the contractions' flops at the matmul rate take "
          f"{passes_s + flops / peak:.2f} s, so at most {slow_s / (passes_s + flops / peak):.1f}x")
    print(f"\nspeedup {statistics.median(ratios):.1f}x   (median over {len(ratios)} side-by-side blocks: "
          f"{', '.join(f'{r:.1f}' for r in ratios)})")


def breakdown(loaded, batch, spec, targets, repeats: int = 3) -> tuple[float, float, float]:
    """Where the structured route's time goes, against this machine's matrix-multiply rate:
    the contractions' flops (route_costs on the active tokens of each length bucket, 2 per
    multiply-add) over their wall time. Mirrors structured_kernels step by step."""
    modules = {"backbone." + t.name: loaded.backbone.get_submodule(t.name) for t in targets}
    _, buckets, sorted_spec = bucketed_inputs(batch, spec)
    weights = sorted_spec.target_weights()
    buffer = GradientBuffer()
    rows, info = [], {}
    for _ in range(repeats):
        start, contract_s, flops = time.perf_counter(), 0.0, 0.0
        with torch.enable_grad():
            bucket_passes = (module_passes(loaded.logits_model, b, modules, sorted_spec, merge_head_passes=True, info=info)
                             for b in buckets)
            for per_bucket in zip(*bucket_passes):
                for name in modules:
                    parts = [(x[name], d[name]) for _, x, d in per_bucket]
                    tick = time.perf_counter()
                    route = contract(parts, weights, "auto", buffer).route
                    contract_s += time.perf_counter() - tick
                    active = [active_tokens(x, d) for x, d in parts]
                    n = sum(x.shape[0] for x, _ in active)
                    tokens = sum(x.shape[0] * x.shape[1] for x, _ in active) / n
                    flops += 2 * route_costs(n, tokens, active[0][1].shape[-1], active[0][0].shape[-1],
                                             weights.shape[0])[route]
        rows.append((time.perf_counter() - start - contract_s, contract_s, flops))
    passes_s = statistics.median(r[0] for r in rows)
    contract_s = statistics.median(r[1] for r in rows)
    square = torch.randn(2048, 2048)
    square @ square
    tick = time.perf_counter()
    for _ in range(5):
        square @ square
    peak = 5 * 2 * 2048**3 / (time.perf_counter() - tick)
    print(f"\nbreakdown (median of {repeats}; {len(buckets)} length buckets, {info['passes']} backward pass(es)): "
          f"forward + backward passes {passes_s:.2f} s, "
          f"contractions {contract_s:.2f} s = {rows[0][2] / 1e9:.0f} GFLOP at {rows[0][2] / contract_s / 1e9:.0f} "
          f"GFLOP/s; this machine's 2048² float32 matmul: {peak / 1e9:.0f} GFLOP/s")
    return passes_s, rows[0][2], peak


if __name__ == "__main__":
    main()
