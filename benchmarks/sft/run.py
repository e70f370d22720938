"""The SFT goal study (issue 18): at the parameter count of LoRA r = 8 on q,v, does the advised
LoRA placement lower test completion NLL below the default placements and the data-driven
rivals? SmolLM2-135M, real data, resumable (a run is named by what decides its result, as in
benchmarks/suite), prints every table.

Arms (LoRA, α = r per module unless said): advised (ranks by the SFT gradient's spectrum), lora-qv,
lora-all, lora-mlp (FFN modules only), eva (lora-all's modules through PEFT's EVA, ρ = 2) and
lora-ga (lora-all's modules through PEFT's LoRA-GA), and advised-lora-ga (the advised
placement with LoRA-GA's initialization: placement and initialization are separate
questions); candidates for the SFT rule: advised-signal (rank 1 on every module, then the
spectrum), advised-ffn (the spectrum within lora-mlp's modules) and advised-rslora (the
advised ranks at PEFT's rank-stabilized scale α/√r, α = 1), and lora-all-rslora (whether that
scale helps a default placement too). Each arm's learning rate is chosen on validation NLL from the grid run; the
tables report test NLL at that rate, for the runs of ``--steps`` steps.

    .venv/bin/python benchmarks/sft/run.py [--tasks bbc-headlines vader-movie-sft] [--arms ...]
        [--learning-rates 1e-3] [--seeds 1] [--first-seed 0] [--steps 60] [--work runs/sft] [--tables-only]

Writes benchmarks/sft/results/smollm2-135m.json (every run) and .md (the tables) and
ntk_advisor/advice/sft_evidence.json (what SFT recipes quote). Another ``--steps`` than the
study's 60 is a probe: its tables go to smollm2-135m-<steps>-steps.md and the evidence is left.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "suite"))

from run import run_key, trained_metrics  # noqa: E402  (benchmarks/suite/run.py)

from ntk_advisor._io import write_text_atomically  # noqa: E402

MODEL = "smollm2-135m"
TASKS = {"bbc-headlines": 128, "vader-movie-sft": 64}  # task -> max_length
SAMPLES, SIGNAL_SAMPLES = 32, 256  # N and M of the profile (docs/sft.md, "Cost")
ALPHA_R = {"use_rslora": False}  # the advised arms measured before rsLoRA became the SFT default keep α = r
ARMS = {"advised": {"training": ALPHA_R}, "lora-qv": {"placement": "lora-qv"}, "lora-all": {"placement": "lora-all"},
        "lora-mlp": {"placement": "lora-mlp"},
        "eva": {"placement": "lora-all", "training": {"lora_init": "eva"}},
        "lora-ga": {"placement": "lora-all", "training": {"lora_init": "loraga"}},
        "advised-lora-ga": {"training": {"lora_init": "loraga"} | ALPHA_R},  # the advised placement, LoRA-GA's start
        "advised-signal": {"allocation": "signal", "training": ALPHA_R},  # rank 1 everywhere first, then the spectrum
        "advised-ffn": {"modules": "ffn", "training": ALPHA_R},  # lora-mlp's modules, ranks by the spectrum
        # the advised ranks at PEFT's α/√r, α = 1 (a rank-6 module no longer starts faster than a
        # rank-1 one): what `recommend` writes for SFT since it was chosen here on validation
        "advised-rslora": {},
        "lora-all-rslora": {"placement": "lora-all", "training": {"use_rslora": True}}}  # is rsLoRA the placement's gain?
DEFAULT_RULE = "advised-rslora"  # the arm whose figures SFT recipes quote (write_evidence)
DEFAULTS = ("lora-qv", "lora-all", "lora-mlp")
CANDIDATES = ("advised-signal", "advised-ffn", "advised-rslora")  # each compared as the advised arm is
RIVALS = ("eva", "lora-ga")  # PEFT's data-driven initializations, compared apart from the defaults
BATCH = 8
STUDY_STEPS = 60  # the protocol whose tables the docs copy and whose figures SFT recipes quote
EVIDENCE = HERE.parents[1] / "ntk_advisor" / "advice" / "sft_evidence.json"


def profile_folder(work: Path, task: str) -> Path:
    from ntk_advisor.profiling.folder import save_profile
    from ntk_advisor.profiling.profiler import ProfileConfig, profile

    folder = work / task / "profile"
    if not (folder / "profile.json").exists():
        started = time.perf_counter()
        result = profile(ProfileConfig(model=MODEL, data=task, task="sft", samples=SAMPLES, max_length=TASKS[task],
                                       signal_samples=SIGNAL_SAMPLES, device="cpu"))
        save_profile(result, folder, force=True)
        print(f"  profiled {task} in {time.perf_counter() - started:.0f} s", flush=True)
    return folder


def qv_budget(profile: Path) -> int:
    """LoRA r = 8 on every query and value module: 8 (d_in + d_out) each."""
    from ntk_advisor.profiling.folder import load_profile

    return sum(8 * (m.d_in + m.d_out) for m in load_profile(profile).modules if m.role in ("query", "value"))


def arm_recipe(profile: Path, fields: dict, seed: int, learning_rate: float, steps: int):
    from ntk_advisor.advice.recommend import RecommendConfig, recommend

    fields = dict(fields)
    training = {"max_steps": steps, "batch_size": BATCH, "learning_rate": learning_rate, "seed": seed,
                "early_stopping_patience": 0, "checkpoint_every": 20} | fields.pop("training", {})
    return recommend(profile, RecommendConfig(method="lora", budget=qv_budget(profile), seed=0, training=training,
                                              **fields))


def figures(metrics: dict) -> dict:
    test = metrics["test"]
    found = {"validation_nll": metrics["validation_best"]["nll"], "test_nll": test["nll"],
             "exact_match": test.get("exact_match"), "trainable": metrics["trainable_parameters"],
             "seconds_per_step": metrics["seconds_per_step_median"]}
    if "forgetting" in metrics:
        found["forgetting"] = metrics["forgetting"]["increase"]
    return found


def grid_seeds(runs: list[dict]) -> set[int]:
    """The seeds one arm ran at every rate of its grid: the rates are compared on these alone
    (a rate's later seeds, run once it was chosen, must not decide the choice); all seeds
    when no seed is shared, which grid_table says."""
    rates = {r["learning_rate"] for r in runs}
    shared = set.intersection(*({r["seed"] for r in runs if r["learning_rate"] == lr} for lr in rates))
    return shared or {r["seed"] for r in runs}


def chosen_rates(mine: list[dict]) -> dict[str, float]:
    """Each arm's learning rate with the lowest mean validation NLL over its grid_seeds."""
    chosen = {}
    for arm in ARMS:
        runs = [r for r in mine if r["arm"] == arm]
        if runs:
            seeds = grid_seeds(runs)
            chosen[arm] = min(sorted({r["learning_rate"] for r in runs}), key=lambda lr: statistics.mean(
                r["validation_nll"] for r in runs if r["learning_rate"] == lr and r["seed"] in seeds))
    return chosen


def paired_reduction(mine: list[dict], chosen: dict[str, float], arm: str, other: str) -> list[float]:
    """100 (NLL_other − NLL_arm) / NLL_other on test, per seed both arms have at their chosen rates."""
    by = {(r["arm"], r["seed"]): r["test_nll"] for r in mine if r["learning_rate"] == chosen.get(r["arm"])}
    seeds = sorted({s for a, s in by if a == arm} & {s for a, s in by if a == other})
    return [100 * (by[(other, s)] - by[(arm, s)]) / by[(other, s)] for s in seeds]


def advised_reduction(mine: list[dict], chosen: dict[str, float], arm: str = "advised") -> dict | None:
    """The advised arm's (or a candidate rule's) relative test-NLL reduction over the default
    with the lowest validation NLL, in %, paired over the seeds both have at their chosen
    rates; and over each data-driven rival (EVA, LoRA-GA) the same way."""
    defaults = [a for a in DEFAULTS if a in chosen]
    if arm not in chosen or not defaults:
        return None
    best = min(defaults, key=lambda a: statistics.mean(
        r["validation_nll"] for r in mine if r["arm"] == a and r["learning_rate"] == chosen[a]))
    gains = paired_reduction(mine, chosen, arm, best)
    if not gains:
        return None
    rivals = {other: round(statistics.mean(found), 3) for other in RIVALS if other in chosen
              for found in [paired_reduction(mine, chosen, arm, other)] if found}
    return {"best_default": best, "percent_lower": round(statistics.mean(gains), 3),
            "se": round(statistics.stdev(gains) / len(gains) ** 0.5, 3) if len(gains) > 1 else None,
            "seeds": len(gains), "percent_lower_than_rivals": rivals, "learning_rates": chosen}


def grid_table(mine: list[dict]) -> list[str]:
    """The validation NLL each arm's rate choice compared: at every rate of the grid, the mean
    over the arm's grid_seeds, the chosen rate in bold; nothing when one rate ran."""
    rates = sorted({r["learning_rate"] for r in mine})
    if len(rates) < 2:
        return []
    chosen = chosen_rates(mine)
    lines = ["", "Validation NLL over the learning-rate grid, on the seeds every rate of the arm ran (the choice):",
             "", "| arm | " + " | ".join(f"lr {lr:g}" for lr in rates) + " | seeds compared |",
             "|---" * (len(rates) + 2) + "|"]
    for arm in chosen:
        runs = [r for r in mine if r["arm"] == arm]
        seeds = grid_seeds(runs)
        shared = all({r["seed"] for r in runs if r["learning_rate"] == lr} >= seeds for lr in {r["learning_rate"]
                                                                                               for r in runs})
        cells = []
        for lr in rates:
            found = [r["validation_nll"] for r in runs if r["learning_rate"] == lr and r["seed"] in seeds]
            cell = f"{statistics.mean(found):.4f}" if found else "—"
            cells.append(f"**{cell}**" if lr == chosen[arm] else cell)
        named = ", ".join(str(seed) for seed in sorted(seeds)) + ("" if shared else " (none shared by every rate)")
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {named} |")
    return lines


def tables(runs: list[dict]) -> str:
    """Per task: each arm at its validation-chosen rate (mean over seeds), and the advised arm's
    relative test-NLL reduction over the best default, paired over seeds."""
    lines = [f"# SFT study: {MODEL}, LoRA at the parameter count of r = 8 on q,v\n"]
    for task in sorted({r["task"] for r in runs}):
        mine = [r for r in runs if r["task"] == task]
        chosen = chosen_rates(mine)
        lines += [f"## {task}\n", "| arm | learning rate (chosen on validation) | validation NLL | test NLL | "
                  "greedy exact match | forgetting (NLL increase) | seeds |", "|---|---|---|---|---|---|---|"]
        for arm, lr in chosen.items():
            found = [r for r in mine if r["arm"] == arm and r["learning_rate"] == lr]
            mean = lambda key: statistics.mean(r[key] for r in found) if all(r.get(key) is not None for r in found) \
                else float("nan")  # noqa: E731
            lines.append(f"| {arm} | {lr:g} | {mean('validation_nll'):.4f} | {mean('test_nll'):.4f} | "
                         f"{mean('exact_match'):.3f} | {mean('forgetting'):+.4f} | {len(found)} |")
        lines += grid_table(mine) + [""]  # a blank line ends the table before the sentences
        reduction = advised_reduction(mine, chosen)
        if reduction:
            spread = f" ± {reduction['se']:.2f}" if reduction["se"] is not None else ""
            lines.append(f"Advised (α = r) test NLL vs the best default on validation ({reduction['best_default']}): "
                         f"{reduction['percent_lower']:+.2f} %{spread} lower over {reduction['seeds']} seed(s) "
                         "(the goal: at least 2 % lower).")
            for rival, value in reduction["percent_lower_than_rivals"].items():
                lines.append(f"Advised (α = r) test NLL vs {rival}: {value:+.2f} % lower.")
        for candidate in CANDIDATES:
            found = advised_reduction(mine, chosen, candidate)
            if found:
                spread = f" ± {found['se']:.2f}" if found["se"] is not None else ""
                versus = paired_reduction(mine, chosen, candidate, "advised")
                label = "Default rule (what recommend writes)" if candidate == DEFAULT_RULE else "Candidate"
                against_advised = (f"; vs advised: {statistics.mean(versus):+.2f} % lower over {len(versus)} seed(s)"
                                   if versus else "")  # the advised arm may not have run on this task
                lines.append(f"{label} {candidate} vs the best default ({found['best_default']}): "
                             f"{found['percent_lower']:+.2f} %{spread} lower over {found['seeds']} seed(s)"
                             f"{against_advised}"
                             + (", and vs " + ", ".join(f"{k}: {v:+.2f} %" for k, v in
                                                       found["percent_lower_than_rivals"].items())
                                if found["percent_lower_than_rivals"] else "") + ".")
        combined = paired_reduction(mine, chosen, "advised-lora-ga", "lora-ga")
        if combined:
            lines.append(f"The advised placement with LoRA-GA's initialization vs lora-ga (lora-all's modules): "
                         f"{statistics.mean(combined):+.2f} % lower over {len(combined)} seed(s).")
        lines.append("")
    return "\n".join(lines)


def write_evidence(runs: list[dict], steps: int) -> None:
    """What an SFT recipe quotes (advice/uncertainty.py): the advised arm's measured reduction per
    task, with what identifies the measurement (a recipe quotes it only when these match its own)."""
    from ntk_advisor.advice.config import RecommendConfig, advised_rule, resolve_allocation
    from ntk_advisor.advice.recommend import training_fields

    def reductions(at_steps: int) -> dict:
        found = {}
        for task in sorted({r["task"] for r in runs}):
            mine = [r for r in runs if r["task"] == task and r["steps"] == at_steps]
            reduction = advised_reduction(mine, chosen_rates(mine), DEFAULT_RULE) if mine else None
            if reduction:
                found[task] = reduction
        return found

    tasks = reductions(steps)
    longer_steps = sorted({r["steps"] for r in runs if r["steps"] > steps})  # probes of longer training
    longer = {str(n): found for n in longer_steps if (found := reductions(n))}
    budgets = {r["trainable"] for r in runs if r["arm"] == "lora-qv" and r["steps"] == steps}  # r = 8 on q,v exactly
    fields = {key: value for key, value in ARMS[DEFAULT_RULE].items() if key != "training"}
    rule = advised_rule(resolve_allocation(RecommendConfig(method="lora", **fields)))
    settings = {"task": "sft", "signal_samples": SIGNAL_SAMPLES}  # the study's profiles
    rslora = training_fields(RecommendConfig(method="lora", **ARMS[DEFAULT_RULE]), settings).get("use_rslora", False)
    write_text_atomically(EVIDENCE, json.dumps({"source": "benchmarks/sft/run.py", "model": MODEL, "steps": steps,
                                                "method": "lora", "rule": rule, "lora_init": "default",
                                                "use_rslora": rslora, "budget": max(budgets) if budgets else None,
                                                "split": "test", "tasks": tasks, "longer_runs": longer},
                                               indent=1) + "\n")


def save_results(results: dict, done: dict, path: Path) -> None:
    results["runs"] = sorted(done.values(), key=lambda r: (r["task"], r["arm"], r["seed"], r["learning_rate"]))
    write_text_atomically(path, json.dumps(results, indent=1) + "\n")  # a kill mid-write keeps every run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="*", default=["bbc-headlines"])
    parser.add_argument("--arms", nargs="*", default=list(ARMS))
    parser.add_argument("--learning-rates", nargs="*", type=float, default=[1e-3])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=STUDY_STEPS)
    parser.add_argument("--work", type=Path, default=Path("runs/sft"))
    parser.add_argument("--tables-only", action="store_true")
    args = parser.parse_args(argv)
    path = HERE / "results" / f"{MODEL}.json"
    results = json.loads(path.read_text()) if path.exists() else {"model": MODEL, "runs": []}
    done = {(r["task"], r["arm"], r["seed"], r["learning_rate"], r["steps"]): r for r in results["runs"]}
    if not args.tables_only:
        for task in args.tasks:
            print(task, flush=True)
            profile = profile_folder(args.work, task)
            for lr in args.learning_rates:
                for seed in range(args.first_seed, args.seeds):
                    for arm in args.arms:
                        recipe = arm_recipe(profile, ARMS[arm], seed, lr, args.steps)
                        key = run_key(recipe)
                        print(f"  {arm} seed {seed} lr {lr:g} ({key})", flush=True)
                        recorded = {r["run"]: r for r in done.values()}
                        if key in recorded:  # a fresh clone has no run folders; an arm may coincide with another
                            done.setdefault((task, arm, seed, lr, args.steps), recorded[key] | {"arm": arm})
                            continue
                        metrics, folder = trained_metrics(recipe, args.work / task)
                        done[(task, arm, seed, lr, args.steps)] = {
                            "task": task, "arm": arm, "seed": seed, "learning_rate": lr, "steps": args.steps,
                            "run": folder.name, **figures(metrics)}
                        save_results(results, done, path)
        save_results(results, done, path)
    text = tables([r for r in results["runs"] if r["steps"] == args.steps])  # one protocol per table, as the evidence
    if args.steps == STUDY_STEPS:  # another step count is a probe: it must not replace what recipes quote
        write_evidence(results["runs"], args.steps)
    suffix = "" if args.steps == STUDY_STEPS else f"-{args.steps}-steps"
    write_text_atomically(HERE / "results" / f"{MODEL}{suffix}.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
