"""Does a recipe train as well under Hugging Face Trainer as under `ntk-advisor train`? (issue 20)

Real minilm-l6 + vader-movie, the suite's LoRA recipe at 21,506 parameters (advised ranks, the
suite's profile: N = 64, probe head), the suite's protocol: 100 steps of 32 at learning rate
2e-3, 6 warmup steps then linear decay, gradient clipping at 1.0, AdamW without weight decay,
proximal λ = 0 (the recipe's default). For each training seed, three arms:

- `ntk-advisor train`: the recipe as it is (the run is the suite's own, read back when it exists);
- `Trainer, θ0`: `get_peft_model(model, LoraConfig(**recipe.peft))` on the recipe's θ0 (the
  model with its probe head, `load_for_recipe`), trained by `transformers.Trainer` with the
  same steps, batch, rate, schedule and clipping;
- `Trainer, new head`: the same, on `load_classifier` (`from_pretrained` with a head drawn
  from the training seed): what a PEFT user gets from the `peft` section alone. For a recipe
  with `head_init: random` (the suite's) it is the same θ0 as the recipe's, so the two
  Trainer arms must agree exactly; they differ only for `head_init: probe`, which the section
  cannot carry.

Test accuracy of every arm is measured by the same code (the classifier task's evaluate) on the
same split. Prints each seed, the means, and the paired differences with their standard error.

    .venv/bin/python benchmarks/bench_trainer_parity.py [--seeds 3] [--work runs/suite]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "suite"))

import run as suite  # noqa: E402  (benchmarks/suite/run.py: the suite's profiles, recipes and runs)

TASK, BUDGET, LEARNING_RATE = "vader-movie", 21_506, 2e-3


def trainer_accuracy(recipe, seed: int, theta0: bool) -> float:
    """Test accuracy of the recipe's `peft` section trained by transformers.Trainer."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

    from ntk_advisor.inputs import data as data_lib
    from ntk_advisor.inputs import models
    from ntk_advisor.tasks import get_task
    from ntk_advisor.training.theta0 import load_for_recipe

    set_seed(seed)
    task = get_task(recipe.model.task)
    dataset = task.read_data(recipe)
    splits = data_lib.split_dataset(dataset, seed=recipe.data.seed)
    if theta0:
        loaded, _ = load_for_recipe(recipe, dataset.label_names, splits=splits)
    else:
        loaded = models.load_classifier(recipe.model.name, num_labels=recipe.model.num_labels, seed=seed)
    peft_model = get_peft_model(loaded.backbone, LoraConfig(**recipe.peft))  # injects into loaded.backbone
    max_length, train = recipe.data.max_length, splits.train
    rows = [{**{k: v[0] for k, v in models.encode(loaded.tokenizer, [train.texts[i]], max_length).items()},
             "labels": torch.tensor(train.labels[i])} for i in range(len(train))]
    cfg = recipe.training
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="parity-"), max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate, warmup_steps=int(cfg.warmup_ratio * cfg.max_steps), lr_scheduler_type="linear",
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, optim="adamw_torch", seed=seed, data_seed=seed,
        save_strategy="no", eval_strategy="no", logging_strategy="no", report_to=[], use_cpu=True,
        dataloader_num_workers=0, disable_tqdm=True)
    Trainer(model=peft_model, args=args, train_dataset=rows,
            data_collator=DataCollatorWithPadding(loaded.tokenizer)).train()
    return task.evaluate(loaded.logits_model, loaded, splits.test, max_length)["accuracy"]


def mean_se(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("runs/suite"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    profile = suite.profile_folder(args.work, "minilm-l6", TASK)
    results_path = args.work / "trainer-parity.json"
    found = json.loads(results_path.read_text()) if results_path.exists() else {}
    for seed in range(args.seeds):
        recipe = suite.arm_recipe(profile, "lora", BUDGET, {"allocation": "greedy"}, seed, LEARNING_RATE)
        row = found.setdefault(str(seed), {})
        if "ntk" not in row:
            row["ntk"] = suite.train_arm(recipe, args.work / "minilm-l6" / TASK)["test"]
        for arm, theta0 in (("trainer_theta0", True), ("trainer_new_head", False)):
            if arm not in row:
                started = time.perf_counter()
                row[arm] = trainer_accuracy(recipe, seed, theta0)
                print(f"  seed {seed} {arm}: {row[arm]:.4f} in {time.perf_counter() - started:.0f} s", flush=True)
        results_path.write_text(json.dumps(found, indent=1))
    seeds = sorted(found, key=int)[: args.seeds]
    print(f"minilm-l6, {TASK}, LoRA recipe at {BUDGET:,} parameters (advised ranks), {suite.STEPS} steps of "
          f"{suite.BATCH} at {LEARNING_RATE:g}; test accuracy\n")
    print("| seed | ntk-advisor train | Trainer, θ0 | Trainer, new head |")
    print("|---|---|---|---|")
    for s in seeds:
        r = found[s]
        print(f"| {s} | {r['ntk']:.4f} | {r['trainer_theta0']:.4f} | {r['trainer_new_head']:.4f} |")
    cols = {arm: [found[s][arm] for s in seeds] for arm in ("ntk", "trainer_theta0", "trainer_new_head")}
    print("| mean ± SE | " + " | ".join("{:.4f} ± {:.4f}".format(*mean_se(v)) for v in cols.values()) + " |")
    print("\nPaired difference from `ntk-advisor train`, points (mean ± SE over seeds):\n")
    for arm in ("trainer_theta0", "trainer_new_head"):
        diff = [100 * (a - b) for a, b in zip(cols[arm], cols["ntk"])]
        m, se = mean_se(diff)
        print(f"- {arm}: {m:+.2f} ± {se:.2f}")
    print(f"- seed-to-seed SD of `ntk-advisor train`: {100 * statistics.stdev(cols['ntk']):.2f} points")


if __name__ == "__main__":
    main()
