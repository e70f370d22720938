"""The suite's tables, from the run records of run.py (no torch: `--tables-only` is instant).

For each study: test accuracy per task and arm (mean over training seeds), then, for each
advised arm, the paired gain over the best default placement of its method (the default
with the highest mean on the split in question), per task, with the mean over tasks, the
worst task and the tasks that miss "do no harm" (more than 0.5 points below the best
default). The selection table does the same on the validation split: that is where a rule
is chosen; the test table reports it.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

HARM_POINTS = 0.5


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _se(values: list[float]) -> float:
    return statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")


def gains(runs: list[dict], study: str, defaults: tuple[str, ...], split: str, learning_rate: float,
          chosen_on: str | None = None) -> dict:
    """{advised arm: {task: (mean paired gain in points, SE, best default)}} on ``split``; the
    best default is the one with the highest mean on ``chosen_on`` (default: ``split`` itself).
    Chosen on the split it is reported on, the best of several defaults carries that split's
    noise in its favour; chosen on validation, it is the default a user would have picked."""
    table: dict = defaultdict(lambda: defaultdict(dict))  # task -> arm -> seed -> {split: accuracy}
    for r in runs:
        if r["study"] == study and r["learning_rate"] == learning_rate:
            table[r["task"]][r["arm"]][r["seed"]] = r
    out: dict = defaultdict(dict)
    for task, by_arm in table.items():
        arms = {arm: {s: r[split] for s, r in by_seed.items()} for arm, by_seed in by_arm.items()}
        present = [d for d in defaults if d in arms]
        if not present:
            continue
        best = max(present, key=lambda d: _mean([r[chosen_on or split] for r in by_arm[d].values()]))
        for arm, by_seed in arms.items():
            if not arm.startswith("advised"):
                continue
            seeds = sorted(set(by_seed) & set(arms[best]))
            if seeds:
                diffs = [100 * (by_seed[s] - arms[best][s]) for s in seeds]
                out[arm][task] = (_mean(diffs), _se(diffs), best)
    return out


def accuracy_table(runs: list[dict], study: str, learning_rate: float) -> list[str]:
    table: dict = defaultdict(lambda: defaultdict(list))
    for r in runs:
        if r["study"] == study and r["learning_rate"] == learning_rate:
            table[r["task"]][r["arm"]].append(r["test"])
    arms = sorted({a for t in table.values() for a in t}, key=lambda a: (not a.startswith("advised"), a))
    lines = ["| task | " + " | ".join(arms) + " | seeds |", "|---|" + "---|" * (len(arms) + 1)]
    for task, by_arm in table.items():
        cells = [f"{_mean(by_arm[a]):.4f}" if a in by_arm else "" for a in arms]
        lines.append(f"| {task} | " + " | ".join(cells) + f" | {max(len(v) for v in by_arm.values())} |")
    return lines


def gain_table(found: dict, title: str) -> list[str]:
    lines = [f"{title}", "", "| advised arm | task | gain over best default, points (± SE) | best default |",
             "|---|---|---|---|"]
    for arm, per_task in sorted(found.items()):
        for task, (gain, se, best) in per_task.items():
            error = f" ± {se:.1f}" if se == se else ""
            lines.append(f"| {arm} | {task} | {gain:+.1f}{error} | {best} |")
    lines += ["", "| advised arm | tasks | mean gain | worst task | tasks more than 0.5 below the best default |",
              "|---|---|---|---|---|"]
    for arm, per_task in sorted(found.items()):
        values = {t: g for t, (g, _, _) in per_task.items()}
        worst = min(values, key=values.get)
        harmed = [f"{t} ({g:+.1f})" for t, g in values.items() if g < -HARM_POINTS]
        lines.append(f"| {arm} | {len(values)} | {_mean(list(values.values())):+.2f} | {worst} "
                     f"({values[worst]:+.1f}) | {', '.join(harmed) or 'none'} |")
    return lines


def prediction_table(runs: list[dict], study: str, reference: str, learning_rate: float) -> list[str]:
    """The recipe's predicted gain over ``reference`` (profile LOO, before training) next to
    the measured test gain over the same arm, and the Spearman ρ over the rows."""
    by_key = {(r["task"], r["arm"], r["seed"]): r for r in runs
              if r["study"] == study and r["learning_rate"] == learning_rate}
    rows = []
    for (task, arm, seed), r in sorted(by_key.items()):
        base = by_key.get((task, reference, seed))
        if arm.startswith("advised") and "predicted_gain" in r and base is not None:
            rows.append((task, arm, seed, r["predicted_gain"], r["predicted_low"], r["predicted_high"],
                         100 * (r["test"] - base["test"])))
    if not rows:
        return []
    lines = [f"Predicted (profile, before training) vs measured gain over {reference}, test split:", "",
             "| task | advised arm | seed | predicted, points (90 % interval) | measured, points | inside |",
             "|---|---|---|---|---|---|"]
    for task, arm, seed, gain, low, high, measured in rows:
        lines.append(f"| {task} | {arm} | {seed} | {gain:+.1f} ({low:+.1f} to {high:+.1f}) | {measured:+.1f} | "
                     f"{'yes' if low <= measured <= high else 'no'} |")
    if len(rows) >= 3:
        lines += ["", f"Spearman ρ of predicted vs measured over {len(rows)} rows: "
                      f"{_spearman([r[3] for r in rows], [r[6] for r in rows]):+.2f}"]
    return lines


def _spearman(a: list[float], b: list[float]) -> float:
    def ranks(values):
        order = sorted(range(len(values)), key=lambda i: values[i])
        out = [0.0] * len(values)
        i = 0
        while i < len(order):  # ties share their mean rank
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out

    ra, rb = ranks(a), ranks(b)
    ma, mb = _mean(ra), _mean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    var = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return cov / var if var else float("nan")


def tuned(runs: list[dict], study: str) -> dict:
    """{task: {arm: (learning rate, {seed: validation}, {seed: test})}}, each arm at its own best
    learning rate: chosen on validation over the seeds every rate of the arm's grid has, then
    reported on every seed trained at that rate, on both splits (further seeds are run at the
    chosen rate only). Only tasks where some arm has a grid of at least three learning rates."""
    table: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))  # task -> arm -> lr -> seed -> run
    for r in runs:
        if r["study"] == study:
            table[r["task"]][r["arm"]][r["learning_rate"]][r["seed"]] = r
    out: dict = {}
    for task, arms in table.items():
        if max(len(grid) for grid in arms.values()) < 3:
            continue
        out[task] = {}
        for arm, grid in arms.items():
            seeds = sorted(set.intersection(*(set(by_seed) for by_seed in grid.values())))
            if len(grid) < 3 or not seeds:
                continue
            lr = max(grid, key=lambda rate: _mean([grid[rate][s]["validation"] for s in seeds]))
            chosen = sorted(grid[lr].items())
            out[task][arm] = (lr, {s: run["validation"] for s, run in chosen}, {s: run["test"] for s, run in chosen})
    return out


def tuned_gains(found: dict, defaults: tuple[str, ...], split: str = "test", chosen_on: str | None = None) -> dict:
    """{advised arm: {task: (paired gain in points, SE, best default, seeds)}} at tuned learning
    rates on ``split``; the best default is the one with the highest mean on ``chosen_on``
    (default: ``split``, as in `gains`), so on validation it is the default a user would have picked there."""
    column = {"validation": 1, "test": 2}[split]
    choose = {"validation": 1, "test": 2}[chosen_on or split]
    out: dict = defaultdict(dict)
    for task, arms in found.items():
        present = [d for d in defaults if d in arms]
        if not present:
            continue
        best = max(present, key=lambda d: _mean(list(arms[d][choose].values())))
        for arm, figures in arms.items():
            scores, reference = figures[column], arms[best][column]
            seeds = sorted(set(scores) & set(reference))
            if arm.startswith("advised") and seeds:
                diffs = [100 * (scores[s] - reference[s]) for s in seeds]
                out[arm][task] = (_mean(diffs), _se(diffs), best, len(seeds))
    return out


def tuned_table(runs: list[dict], study: str, defaults: tuple[str, ...], rivals: tuple[str, ...] = ()) -> list[str]:
    found = tuned(runs, study)
    if not found:
        return []
    lines = [f"Each arm at its own best learning rate (chosen on validation over the seeds of the whole grid; "
             f"both splits over every seed at that rate), {study}:", "",
             "| task | arm | learning rate | validation | test (seeds) |", "|---|---|---|---|---|"]
    for task, arms in found.items():
        for arm, (lr, validations, tests) in sorted(arms.items()):
            lines.append(f"| {task} | {arm} | {lr:g} | {_mean(list(validations.values())):.4f} | "
                         f"{_mean(list(tests.values())):.4f} ({len(tests)}) |")
    lines += _tuned_gain_lines(tuned_gains(found, defaults, "validation"), "best default", "validation")
    lines += _tuned_gain_lines(tuned_gains(found, defaults), "best default")
    lines += _tuned_gain_lines(tuned_gains(found, defaults, chosen_on="validation"), "the default chosen on validation")
    for rival in rivals:  # a data-driven rival is compared apart, as at one shared rate
        lines += _tuned_gain_lines(tuned_gains(found, (rival,)), rival)
    return lines


def _tuned_gain_lines(found_gains: dict, against: str, split: str = "test") -> list[str]:
    if not found_gains:
        return []
    lines = ["", f"| advised arm | task | gain over {against} at tuned rates, {split} points (± SE) | {against} "
             "| seeds |", "|---|---|---|---|---|"]
    for arm, per_task in sorted(found_gains.items()):
        for task, (gain, se, best, seeds) in sorted(per_task.items()):
            error = f" ± {se:.1f}" if se == se else ""
            lines.append(f"| {arm} | {task} | {gain:+.1f}{error} | {best} | {seeds} |")
    lines += ["", f"| advised arm | tasks | mean gain | worst task | tasks more than 0.5 below {against} |",
              "|---|---|---|---|---|"]
    for arm, per_task in sorted(found_gains.items()):
        worst = min(per_task, key=lambda t: per_task[t][0])
        harmed = [f"{t} ({per_task[t][0]:+.1f})" for t in sorted(per_task) if per_task[t][0] < -HARM_POINTS]
        lines.append(f"| {arm} | {len(per_task)} | {_mean([g for g, *_ in per_task.values()]):+.2f} | "
                     f"{worst} ({per_task[worst][0]:+.1f}) | {', '.join(harmed) or 'none'} |")
    return lines


def method_table(comparisons: list[dict]) -> list[str]:
    """RoCoFT's default advice against LoRA's at one budget (what --method auto chooses from:
    the validation columns)."""
    lines = []
    for c in comparisons:
        rate = ("each method at its own tuned learning rate" if c["learning_rate"] == "tuned"
                else f"learning rate {c['learning_rate']:g}")
        lines += [f"## RoCoFT vs LoRA default advice at {c['budget']:,} parameters, {rate} (--method auto)", "",
                  "| task | validation: rocoft | lora | lora − rocoft, points | test: rocoft | lora | "
                  "lora − rocoft, points | seeds |", "|---|---|---|---|---|---|---|---|"]
        for task, v in c["per_task"].items():
            val = v["validation"]
            lines.append(f"| {task} | {val['rocoft']:.4f} | {val['lora']:.4f} | {100 * (val['lora'] - val['rocoft']):+.1f} "
                         f"| {v['rocoft']:.4f} | {v['lora']:.4f} | {100 * (v['lora'] - v['rocoft']):+.1f} | "
                         f"{v['seeds']} |")
        lines.append("")
    return lines


def _paired_seeds(runs: list[dict], study: str, task: str, learning_rate: float, arms: tuple[str, ...]) -> int:
    seeds = [{r["seed"] for r in runs if (r["study"], r["task"], r["learning_rate"], r["arm"]) ==
              (study, task, learning_rate, arm)} for arm in arms]
    return len(set.intersection(*seeds))


def _verdict_row(study: str, rate: str, per_task: dict, seeds: dict, against: str, win_points: float | None) -> str:
    """One line of the verdict: per_task maps task -> (gain, SE, ...), seeds task -> paired seeds."""
    counts = sorted(seeds[t] for t in per_task)
    values = {t: g for t, (g, *_) in per_task.items()}
    worst = min(values, key=values.get)
    se = per_task[worst][1]
    harmed = [f"{t} ({g:+.1f})" for t, g in sorted(values.items()) if g < -HARM_POINTS]
    mean = _mean(list(values.values()))
    win = "—" if win_points is None else ("yes" if mean >= win_points else "no")
    spread = f"{counts[0]}" if counts[0] == counts[-1] else f"{counts[0]}–{counts[-1]}"
    return (f"| {study} | {rate} | {against} | {len(values)} | {spread} | {mean:+.2f} | {worst} {values[worst]:+.1f}"
            f"{f' ± {se:.1f}' if se == se else ''} | {', '.join(harmed) or 'none'} | "
            f"{'no' if harmed else 'yes'} | {win} |")


def verdict_table(runs: list[dict], defaults: dict, rivals: dict, study_methods: dict, arm: str,
                  win_points: float = 1.5) -> list[str]:
    """The goals, study by study, for the default advice ``arm`` on the test split: against the
    best default placement (the best on test, the strict reading of "do no harm") at the
    learning rate most tasks share, then at tuned rates; data-driven rivals on rows of their own."""
    lines = [f"| study | learning rate | against | tasks | seeds per task | mean test gain, points | worst task "
             f"(± SE over seeds) | tasks more than {HARM_POINTS} below | do no harm | mean ≥ +{win_points} |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for study, method in study_methods.items():
        rates = defaultdict(set)
        for r in runs:
            if r["study"] == study:
                rates[r["learning_rate"]].add(r["task"])
        if not rates:
            continue
        shared = max(rates, key=lambda lr: (len(rates[lr]), -lr))
        found = tuned(runs, study)
        for against, names, goal in [("best default", defaults[method], win_points)] + [
                (rival, (rival,), None) for rival in rivals.get(method, ())]:
            per_task = gains(runs, study, names, "test", shared).get(arm)
            if per_task:
                seeds = {t: _paired_seeds(runs, study, t, shared, (arm, best)) for t, (_, _, best) in per_task.items()}
                lines.append(_verdict_row(study, f"{shared:g}", per_task, seeds, against, goal))
            per_task = tuned_gains(found, names).get(arm) if found else None
            if per_task:
                seeds = {t: figures[3] for t, figures in per_task.items()}
                lines.append(_verdict_row(study, "tuned", per_task, seeds, against, goal))
    return lines if len(lines) > 2 else []


def write_tables(results: dict, defaults: dict, rivals: dict, study_methods: dict, path: Path,
                 comparisons: list[dict] = (), default_arm: str | None = None) -> str:
    runs = results["runs"]
    lines = [f"# Transfer suite: {results['model']}", ""]
    verdict = verdict_table(runs, defaults, rivals, study_methods, default_arm) if default_arm else []
    if verdict:
        lines += [f"## Verdict: the default advice ({default_arm}) against the goals, test split", ""] + verdict + [""]
    for study, method in study_methods.items():
        for lr in sorted({r["learning_rate"] for r in runs if r["study"] == study}):
            lines += [f"## {study}, learning rate {lr:g}", "", "Test accuracy (mean over seeds):", ""]
            lines += accuracy_table(runs, study, lr) + [""]
            for split in ("validation", "test"):
                found = gains(runs, study, defaults[method], split, lr)
                if found:
                    lines += gain_table(found, f"Paired gain over the best default placement, {split} split:") + [""]
            held_apart = gains(runs, study, defaults[method], "test", lr, chosen_on="validation")
            if held_apart:
                lines += gain_table(held_apart, "Paired gain over the default chosen on validation, test split:") + [""]
            prediction = prediction_table(runs, study, defaults[method][0], lr)
            if prediction:
                lines += prediction + [""]
            for rival in rivals.get(method, ()):
                found = gains(runs, study, (rival,), "test", lr)
                if found:
                    lines += gain_table(found, f"Paired gain over {rival}, test split:") + [""]
        grid = tuned_table(runs, study, defaults[method], rivals.get(method, ()))
        if grid:
            lines += [f"## {study}, each arm at its best learning rate", ""] + grid + [""]
    lines += method_table(list(comparisons))
    text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    return text
