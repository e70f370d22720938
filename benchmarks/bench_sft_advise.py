"""The cost and the stability of SFT advice on real SmolLM2-135M + bbc-headlines (issue 18).

For each M of --signal-samples, in a process of its own (the peak memory is the process's):

1. the whole advise: ``profile --task sft`` (N probe pairs at T tokens: every block Linear's
   kernel; then the SFT-gradient pass over M training pairs), then ``recommend`` LoRA at the
   parameter count of LoRA r = 8 on q,v, and RoCoFT rows at the same count;
2. the floor, side by side in the same process: forward and backward passes of the
   completion-only loss over the same N + M examples at the profile's batch size (what
   training steps over those examples cost, without the optimizer).

Prints one table of cost (advise seconds, floor seconds, their ratio, peak RSS) and one of how
the advice moves with M against the largest M: LoRA rank overlap Σ_m min(r_a, r_b) / Σ_m r_b
and the share of RoCoFT rows in common.

    .venv/bin/python benchmarks/bench_sft_advise.py [--signal-samples 64 256 1024] [--samples 32]
        [--max-length 128] [--work runs/bench-sft]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

GIB = 2**30


def child(args) -> None:
    import torch

    from ntk_advisor.advice.recommend import RecommendConfig, recommend
    from ntk_advisor.inputs.completions import load_completions
    from ntk_advisor.inputs.dataset import probe_sample, split_dataset
    from ntk_advisor.profiling.folder import save_profile
    from ntk_advisor.profiling.profiler import ProfileConfig, profile
    from ntk_advisor.profiling.sft import SIGNAL_BATCH
    from ntk_advisor.tasks import get_task

    torch.set_num_threads(2)
    work = Path(args.work) / f"m{args.child}"
    config = ProfileConfig(model="smollm2-135m", data="bbc-headlines", task="sft", samples=args.samples,
                           max_length=args.max_length, signal_samples=args.child, device="cpu")
    tick = time.perf_counter()
    result = profile(config)
    profile_s = time.perf_counter() - tick
    folder = save_profile(result, work / "profile", force=True)
    budget = sum(8 * (m.d_in + m.d_out) for m in result.modules if m.role in ("query", "value"))
    placements, recommend_s, peak = {}, {}, {}
    for method in ("lora", "rocoft"):  # LoRA first: its advice needs no capture, so its peak is the profile's
        tick = time.perf_counter()
        recipe = recommend(folder, RecommendConfig(method=method, budget=budget))
        recommend_s[method] = time.perf_counter() - tick
        peak[method] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # the process's peak so far
        placements[method] = {t.module: (t.rank if method == "lora" else list(t.indices)) for t in recipe.targets}
        from ntk_advisor.recipe.io import save_recipe

        save_recipe(recipe, work / f"{method}.yaml")
    task = get_task("sft")
    loaded = task.load_model("smollm2-135m", torch.float32)
    train = split_dataset(load_completions("bbc-headlines", loaded.tokenizer), seed=0).train
    examples = list(probe_sample(train, args.samples, seed=0).texts)
    signal = train if args.child >= len(train) else probe_sample(train, args.child, seed=0)
    tick = time.perf_counter()
    for split, size in ((probe_sample(train, args.samples, seed=0), args.samples), (signal, SIGNAL_BATCH)):
        for start in range(0, len(split), size):
            inputs, count = task.batch(loaded, split, range(start, min(start + size, len(split))), args.max_length)
            task.loss(loaded.logits_model(**inputs), count).backward()
            loaded.logits_model.zero_grad(set_to_none=True)
    floor_s = time.perf_counter() - tick
    del examples
    out = {"M": args.child, "N": args.samples, "T": args.max_length, "budget": budget,
           "profile_s": profile_s, "kernels_s": result.timing.get("kernels_s"),
           "recommend_s": recommend_s, "floor_s": floor_s,
           "peak_rss_gib": peak,
           "placements": placements}
    (work / "bench.json").write_text(json.dumps(out))


def overlap_ranks(a: dict, b: dict) -> float:
    return sum(min(a.get(m, 0), r) for m, r in b.items()) / sum(b.values())


def overlap_rows(a: dict, b: dict) -> float:
    return sum(len(set(a.get(m, [])) & set(rows)) for m, rows in b.items()) / sum(len(r) for r in b.values())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--signal-samples", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--work", default="runs/bench-sft")
    parser.add_argument("--child", type=int)
    args = parser.parse_args()
    if args.child is not None:
        return child(args)
    found = []
    for m in args.signal_samples:
        done = Path(args.work) / f"m{m}" / "bench.json"
        if not done.exists():  # resumable: a finished M is read back
            subprocess.run([sys.executable, __file__, "--child", str(m), "--samples", str(args.samples),
                            "--max-length", str(args.max_length), "--work", args.work], check=True)
        found.append(json.loads(done.read_text()))
    print(f"SmolLM2-135M, bbc-headlines, N = {found[0]['N']} probe pairs at T = {found[0]['T']} tokens, budget "
          f"{found[0]['budget']:,} (LoRA r = 8 on q,v); 2 CPU cores, one process at a time\n")
    print("| M | profile s (kernels s) | recommend s, LoRA / RoCoFT | advise s (profile + LoRA) | floor s (fwd+bwd "
          "over N + M) | advise / floor | peak RSS GiB, profile + LoRA / + RoCoFT |")
    print("|---|---|---|---|---|---|---|")
    for r in found:
        advise = r["profile_s"] + r["recommend_s"]["lora"]
        print(f"| {r['M']} | {r['profile_s']:.0f} ({r['kernels_s']:.0f}) | {r['recommend_s']['lora']:.0f} / "
              f"{r['recommend_s']['rocoft']:.0f} | {advise:.0f} | {r['floor_s']:.0f} | {advise / r['floor_s']:.2f}× | "
              f"{r['peak_rss_gib']['lora']:.2f} / {r['peak_rss_gib']['rocoft']:.2f} |")
    last = found[-1]
    print(f"\nHow the advice moves with M (against M = {last['M']}):\n")
    print("| M | LoRA rank overlap | RoCoFT rows in common | LoRA modules | RoCoFT modules |")
    print("|---|---|---|---|---|")
    for r in found:
        p, q = r["placements"], last["placements"]
        print(f"| {r['M']} | {overlap_ranks(p['lora'], q['lora']):.2f} | {overlap_rows(p['rocoft'], q['rocoft']):.2f} | "
              f"{len(p['lora'])} | {len(p['rocoft'])} |")


if __name__ == "__main__":
    main()
