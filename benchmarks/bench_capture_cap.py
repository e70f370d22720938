"""What `recommend --capture-mib` buys: peak memory and time of RoCoFT advice against the cap on
the captures held at once, on a real profile (default: SmolLM2-135M SFT on bbc-headlines, whose
captures of 210 modules are about 4 GB).

Each cap runs `recommend` in a process of its own (the peak is that process's maximum RSS, the
model, the captures and one pass's graph together) and checks that its recipe places the same
rows as the uncapped one.

    .venv/bin/python benchmarks/bench_capture_cap.py PROFILE [--caps 0 1024 512 256] [--method rocoft]
        [--budget 460800]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

GIB = 2**30


def child(profile: str, method: str, budget: int, cap: float) -> None:
    import torch

    from ntk_advisor.advice import recommend as recommend_module
    from ntk_advisor.advice.recommend import RecommendConfig, recommend

    torch.set_num_threads(2)
    made = []
    real = recommend_module.capture
    recommend_module.capture = lambda folder, capture_mib=0: made.append(real(folder, capture_mib)) or made[-1]
    tick = time.perf_counter()
    recipe = recommend(profile, RecommendConfig(method=method, budget=budget, capture_mib=cap))
    seconds = time.perf_counter() - tick
    passes = made[0].passes
    print(json.dumps({"cap": cap, "seconds": seconds, "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                      * 1024 / GIB, "groups": len(passes.groups), "group_passes": passes.group_passes,
                      "placement": {t.module: [list(t.indices or []), t.rank] for t in recipe.targets}}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile")
    parser.add_argument("--caps", type=float, nargs="+", default=[0, 1024, 512, 256])
    parser.add_argument("--method", default="rocoft")
    parser.add_argument("--budget", type=int, default=460_800)
    parser.add_argument("--child", type=float)
    args = parser.parse_args()
    if args.child is not None:
        return child(args.profile, args.method, args.budget, args.child)
    found = []
    for cap in args.caps:
        done = subprocess.run([sys.executable, __file__, args.profile, "--method", args.method, "--budget",
                               str(args.budget), "--child", str(cap)], check=True, capture_output=True, text=True)
        found.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"{args.method} recommend on {args.profile}, budget {args.budget:,}; 2 CPU cores, one process at a time\n")
    print("| --capture-mib | groups | group passes | seconds | peak RSS GiB | same placement as cap 0 |")
    print("|---|---|---|---|---|---|")
    for r in found:
        cap = "0 (a quarter of free memory)" if r["cap"] == 0 else f"{r['cap']:g}"
        print(f"| {cap} | {r['groups']} | {r['group_passes']} | {r['seconds']:.0f} | {r['peak_gib']:.2f} | "
              f"{'yes' if r['placement'] == found[0]['placement'] else 'no'} |")


if __name__ == "__main__":
    main()
