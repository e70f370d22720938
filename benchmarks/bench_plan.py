"""`plan`'s estimates against measured profiles: the ratio measured / estimated, per part.

Reads the timing of finished profiles (profile.json of each suite task,
runs/suite/<model>/<task>/profile/, made by benchmarks/suite/run.py) and plans the same
settings in this process, with this machine's rate measured once by `calibrate`. Parts:
the probe head, the kernels (passes and contractions together, as profile.json times them)
and the label gradient. Tasks in --skip were timed while another process shared the cores.

    .venv/bin/python benchmarks/bench_plan.py [--work runs/suite] [--model minilm-l6] [--skip ...]
    .venv/bin/python benchmarks/bench_plan.py --profiles runs/plan/smollm2-135m/vader-movie/profile
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from ntk_advisor.profiling.config import ProfileConfig
from ntk_advisor.profiling.plan import calibrate, data_facts, plan_profile


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/suite"))
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--skip", nargs="*", default=["bbc-first-sentence"])
    parser.add_argument("--profiles", nargs="*", type=Path, help="these profile folders instead of the suite's")
    args = parser.parse_args(argv)
    paths = [p / "profile.json" for p in args.profiles] if args.profiles else \
        sorted((args.work / args.model).glob("*/profile/profile.json"))
    rate = calibrate()
    print(f"{args.model if not args.profiles else 'given profiles'}: this machine's matrix-product rate "
          f"{rate / 1e9:.0f} GFLOP/s\n")
    print("| task | T | T̄ | probe head s, measured / estimated | kernels s | label gradient s | total s |")
    print("|---|---|---|---|---|---|---|")
    ratios: dict[str, list[float]] = {"head": [], "kernels": [], "signal": [], "total": []}
    for path in paths:
        document = json.loads(path.read_text())
        settings, timing = document["settings"], document["timing"]
        if path.parts[-3] in args.skip and not args.profiles:
            continue
        config = ProfileConfig(model=settings["model"], data=settings["data"], samples=settings["samples"],
                               max_length=settings["max_length"], head=settings["head"],
                               signal_samples=settings.get("signal_samples", 0), seed=settings["seed"])
        facts = data_facts(config)
        seconds = plan_profile(config, **facts).seconds(rate)
        pairs = {"head": (timing["head_s"], seconds["probe head"]),
                 "kernels": (timing["kernels_s"], seconds["kernel passes"] + seconds["contractions"]),
                 "signal": (timing.get("signal_s", 0.0), seconds["label gradient"]),
                 "total": (timing["total_s"], seconds["total"])}
        for key, (measured, estimated) in pairs.items():
            if estimated > 0:
                ratios[key].append(measured / estimated)
        cells = " | ".join(f"{m:.1f} / {e:.1f}" for m, e in pairs.values())
        label = f"{settings['model']} {path.parts[-3]}" if args.profiles else path.parts[-3]
        print(f"| {label} | {settings['max_length']} | {facts['tokens']:.1f} | {cells} |")
    print("\nmedian measured / estimated: " + ", ".join(f"{key} {statistics.median(v):.2f}x"
                                                       for key, v in ratios.items() if v))


if __name__ == "__main__":
    main()
