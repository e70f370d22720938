"""Real SmolLM2-135M on vader-movie prompts: the advised RoCoFT placement next to first-k and lora-qv.

Label-word prompting (default template, words ' negative' / ' positive'). A 2,000-sentence
stratified subset of vader-movie (every 5th sentence, both classes) keeps evaluation on
2 cores short: 1,600 train / 200 validation / 200 test. One profile (N=32, T=48), then each
arm at the same budget trains the same steps with the same seed; prints a table of
trainable parameters, zero-shot and fine-tuned label-word accuracy, and seconds per step.

    .venv/bin/python benchmarks/bench_smollm2.py [--budget 300000] [--steps 60] [--work runs/bench-smollm2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from ntk_advisor.advice.recommend import RecommendConfig, recommend
from ntk_advisor.inputs import data as data_lib
from ntk_advisor.profiling.folder import save_profile
from ntk_advisor.profiling.profiler import ProfileConfig, profile
from ntk_advisor.recipe.io import save_recipe

CLI = [sys.executable, "-m", "ntk_advisor.cli"]
ARMS = {
    "rocoft advised": RecommendConfig(),
    "rocoft first-k": RecommendConfig(placement="first-k"),
    "lora-qv (q_proj, v_proj)": RecommendConfig(method="lora", placement="lora-qv"),
}


def subset_file(work: Path) -> Path:
    path = work / "vader-2000.tsv"
    if not path.exists():
        vader = data_lib.load_dataset("vader-movie")
        rows = ["text\tlabel"] + [f"{vader.texts[i]}\t{vader.label_names[vader.labels[i]]}"
                                  for i in range(0, len(vader), 5)][:2000]
        path.write_text("\n".join(rows) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=300_000)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--work", type=Path, default=Path("runs/bench-smollm2"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    source = subset_file(args.work)
    folder = args.work / "profile"
    if not folder.exists():
        save_profile(profile(ProfileConfig(model="smollm2-135m", data=str(source), samples=32, max_length=48)), folder)
    zero_shot = json.loads((folder / "profile.json").read_text())["head"]
    rows = []
    for name, config in ARMS.items():
        stem = name.split(" (")[0].replace(" ", "_")
        recipe_path, out = args.work / f"{stem}.yaml", args.work / stem
        if not recipe_path.exists():
            rec = recommend(folder, RecommendConfig(**{**config.__dict__, "budget": args.budget}))
            save_recipe(rec, recipe_path)
        if not (out / "metrics.json").exists():
            subprocess.run(CLI + ["train", str(recipe_path), f"training.max_steps={args.steps}",
                                  f"training.batch_size={args.batch_size}", "training.checkpoint_every=1000",
                                  "--out", str(out), "--force"], check=True, stdout=subprocess.DEVNULL)
        m = json.loads((out / "metrics.json").read_text())
        rows.append((name, m))
    print(f"SmolLM2-135M, label words, vader-movie 2,000-sentence subset; budget {args.budget:,}, {args.steps} steps of "
          f"{args.batch_size}; zero-shot validation accuracy of the prompt {zero_shot['validation_accuracy']:.3f} "
          f"({zero_shot['validation_examples']} examples)")
    print("| arm | trainable | val acc | test acc | s/step | linearization gap |")
    print("|---|---|---|---|---|---|")
    for name, m in rows:
        gap = m.get("linearization_gap")
        print(f"| {name} | {m['trainable_parameters']:,} | {m['validation_best']['accuracy']:.3f} | "
              f"{m['test']['accuracy']:.3f} | {m['seconds_per_step_median']:.2f} | "
              f"{gap if gap is None else round(gap, 3)} |")


if __name__ == "__main__":
    main()
