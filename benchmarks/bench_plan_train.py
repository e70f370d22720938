"""`plan --recipe` against measured training steps: seconds per step and the memory a step adds.

Each case is a recipe written here (first-k rows or LoRA on q,v: the cost of a step depends on
the placement's size and kind, not on which rows), trained for a few steps by `train`'s own
loop (`training.loop._Run`: setup, then `train_step`) in a fresh process, one process at a
time. Measured: the median seconds of a step (after the first), and the peak resident memory
while stepping above the memory just before the first step (model and data loaded), sampled
from /proc. Planned, in the same process: the step's flops at the mean padded length of the
batches actually drawn, over this machine's matrix-product rate (`calibrate`), and the
trainable state plus the activations at the longest batch drawn (the weights are already in
the baseline).

    .venv/bin/python benchmarks/bench_plan_train.py            # every case, ~5 min on 2 cores
    .venv/bin/python benchmarks/bench_plan_train.py --cases minilm-rocoft
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

STEPS = 12


def _minilm_modules(layers: int = 6) -> list[tuple[str, int]]:
    names = ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
             "intermediate.dense", "output.dense"]
    return [(f"bert.encoder.layer.{i}.{n}", 0) for i in range(layers) for n in names]


def _mpnet_modules(layers: int = 12) -> list[tuple[str, int]]:
    names = ["attention.attn.q", "attention.attn.k", "attention.attn.v", "attention.attn.o", "intermediate.dense",
             "output.dense"]
    return [(f"mpnet.encoder.layer.{i}.{n}", 0) for i in range(layers) for n in names]


def _rows(modules) -> list[dict]:
    return [{"module": m, "axis": "rows", "indices": [0]} for m, _ in modules]


def _ranks(modules, rank: int) -> list[dict]:
    return [{"module": m, "rank": rank} for m in modules]


CASES = {  # name -> recipe document (what decides a step's cost)
    "minilm-rocoft": {"model": {"name": "minilm-l6"}, "data": {"source": "vader-movie", "max_length": 48},
                      "method": "rocoft", "targets": _rows(_minilm_modules())},
    "minilm-lora": {"model": {"name": "minilm-l6"}, "data": {"source": "vader-movie", "max_length": 48},
                    "method": "lora", "targets": _ranks([f"bert.encoder.layer.{i}.attention.self.{p}" for i in range(6)
                                                         for p in ("query", "value")], 8)},
    "mpnet-rocoft": {"model": {"name": "mpnet-base"}, "data": {"source": "vader-movie", "max_length": 48},
                     "method": "rocoft", "targets": _rows(_mpnet_modules())},
    "smollm2-sft-lora": {"model": {"name": "smollm2-135m", "task": "sft"},
                         "data": {"source": "bbc-headlines", "max_length": 96}, "method": "lora",
                         "targets": _ranks([f"model.layers.{i}.self_attn.{p}" for i in range(30)
                                            for p in ("q_proj", "v_proj")], 8), "batch_size": 8},
}


def recipe_of(case: str):
    from ntk_advisor.recipe.io import parse_recipe
    from ntk_advisor.recipe.schema import SCHEMA_VERSION

    document = dict(CASES[case])
    batch = document.pop("batch_size", 32)
    return parse_recipe({"schema_version": SCHEMA_VERSION, **document,
                         "training": {"batch_size": batch, "max_steps": STEPS, "checkpoint_every": 10_000}})


def measure(case: str) -> dict:
    """One case in this process: train STEPS steps with train's loop, then plan the same steps."""
    import torch

    from _memory import peak_rss, rss_bytes
    from ntk_advisor.profiling.plan import calibrate
    from ntk_advisor.training import loop
    from ntk_advisor.training.plan import plan_step

    recipe = recipe_of(case)
    with tempfile.TemporaryDirectory() as scratch:
        run = loop._Run(recipe, Path(scratch) / "run", lambda *a, **k: None, "cpu")
        run.prepare(resume=False, force=True, protect=())
        run.setup()
        run.logits_model.train()
        batches = list(loop._batches(len(run.splits.train), recipe.training.batch_size, recipe.training.seed, 0))[:STEPS]
        lengths = [int(run.task.batch(run.loaded, run.splits.train, b, recipe.data.max_length)[0]["input_ids"].shape[1])
                   for b in batches]
        before = rss_bytes()
        found: dict = {}
        with peak_rss(found):
            for batch in batches:
                run.train_step(batch, 0)
    plan = plan_step(recipe, tokens=statistics.mean(lengths), peak_tokens=max(lengths))
    rate = calibrate(width=plan.settings["hidden_size"])
    return {"case": case, "trainable": plan.trainable, "tokens": statistics.mean(lengths), "peak_tokens": max(lengths),
            "step_s": statistics.median(run.step_times[1:]), "planned_step_s": plan.seconds(rate)["total"],
            "rate_gflops": rate / 1e9, "step_mib": (found["peak_bytes"] - before) / 2**20,
            "planned_mib": (plan.memory["activations"] + plan.memory["trainable state"]) / 2**20,
            "threads": torch.get_num_threads()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    rows = []
    for case in args.cases:  # one fresh process per case: a model loaded before skews the next one's memory
        done = subprocess.run([sys.executable, __file__, "--one", case], capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"one training step planned and measured on this machine ({STEPS} steps of train's loop, one process "
          "at a time)\n")
    print("| case | trainable | padded tokens, mean / longest | s/step measured / planned | ratio | "
          "step memory MiB measured / planned | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['trainable']:,} | {r['tokens']:.1f} / {r['peak_tokens']} | {r['step_s']:.2f} / "
              f"{r['planned_step_s']:.2f} | {r['step_s'] / r['planned_step_s']:.2f}× | {r['step_mib']:.0f} / "
              f"{r['planned_mib']:.0f} | {r['step_mib'] / r['planned_mib']:.2f}× |")
    print(f"\nmatrix-product rate {statistics.median(r['rate_gflops'] for r in rows):.0f} GFLOP/s (median of the "
          f"cases' calibrations); median time ratio "
          f"{statistics.median(r['step_s'] / r['planned_step_s'] for r in rows):.2f}×, memory ratio "
          f"{statistics.median(r['step_mib'] / r['planned_mib'] for r in rows):.2f}×")


if __name__ == "__main__":
    main()
