"""The transfer suite's tables (benchmarks/suite/tables.py): the best default is chosen per
task and split, gains are paired by seed, and a loss beyond 0.5 points is listed as harm."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "suite"))
from tables import gains, write_tables  # noqa: E402


def record(task, arm, seed, validation, test, study="s", lr=2e-3):
    return {"task": task, "study": study, "arm": arm, "seed": seed, "learning_rate": lr,
            "validation": validation, "test": test}


RUNS = [
    record("a", "advised-x", 0, 0.80, 0.70), record("a", "advised-x", 1, 0.82, 0.74),
    record("a", "first-k", 0, 0.78, 0.72), record("a", "first-k", 1, 0.80, 0.72),
    record("a", "random", 0, 0.90, 0.60), record("a", "random", 1, 0.90, 0.60),  # best on validation only
    record("b", "advised-x", 0, 0.50, 0.50), record("b", "first-k", 0, 0.60, 0.60),
    record("b", "advised-x", 0, 0.99, 0.99, lr=4e-3),  # another learning rate: never mixed in
]


def test_best_default_is_chosen_per_split_and_gains_are_paired():
    test = gains(RUNS, "s", ("first-k", "random"), "test", 2e-3)["advised-x"]
    gain, se, best = test["a"]
    assert best == "first-k" and gain == pytest.approx(100 * ((0.70 - 0.72) + (0.74 - 0.72)) / 2)
    assert se == pytest.approx(2.0)  # stdev of (-2, +2) over sqrt(2)
    validation = gains(RUNS, "s", ("first-k", "random"), "validation", 2e-3)["advised-x"]
    assert validation["a"][2] == "random" and validation["a"][0] == pytest.approx(100 * (0.81 - 0.90))
    assert test["b"][0] == pytest.approx(-10.0) and test["b"][1] != test["b"][1]  # one seed: no SE


def test_tables_list_the_harmed_tasks(tmp_path):
    text = write_tables({"model": "m", "runs": RUNS}, {"rocoft": ("first-k", "random")}, {}, {"s": "rocoft"},
                        tmp_path / "t.md")
    assert (tmp_path / "t.md").read_text().strip() == text.strip()
    test_summary = text.split("test split:")[1]
    assert "| advised-x | 2 | -5.00 | b (-10.0) | b (-10.0) |" in test_summary


def test_prediction_table_and_spearman():
    from tables import _spearman, prediction_table

    runs = [dict(record(t, "advised-x", 0, 0, acc), predicted_gain=g, predicted_low=g - 5, predicted_high=g + 5)
            for t, acc, g in (("a", 0.75, 3.0), ("b", 0.70, 1.0), ("c", 0.60, -2.0))]
    runs += [record(t, "first-k", 0, 0, 0.70) for t in "abc"]
    lines = prediction_table(runs, "s", "first-k", 2e-3)
    assert "| a | advised-x | 0 | +3.0 (-2.0 to +8.0) | +5.0 | yes |" in lines
    assert "| c | advised-x | 0 | -2.0 (-7.0 to +3.0) | -10.0 | no |" in lines
    assert lines[-1].endswith("+1.00")  # the predictions order the three tasks as measured
    assert _spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert _spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(0.866, abs=1e-3)  # ties share their mean rank


def test_each_arm_at_its_own_best_learning_rate():
    from tables import tuned

    runs = [record("a", "advised-x", 0, v, t, lr=lr) for lr, v, t in [(1e-3, 0.70, 0.71), (2e-3, 0.80, 0.75),
                                                                       (4e-3, 0.78, 0.90)]]
    runs += [record("a", "first-k", 0, v, t, lr=lr) for lr, v, t in [(1e-3, 0.60, 0.60), (2e-3, 0.65, 0.64),
                                                                     (4e-3, 0.79, 0.78)]]
    runs += [record("a", "advised-x", 1, 0.99, 0.99, lr=2e-3)]  # a seed the grid lacks: not used to choose
    runs += [record("b", "advised-x", 0, 0.5, 0.5)]  # no grid: left out
    found = tuned(runs, "s")
    assert set(found) == {"a"}
    # best on validation, not on test (0.90); the extra seed at the chosen rate is reported
    assert found["a"]["advised-x"] == (2e-3, {0: 0.80, 1: 0.99}, {0: 0.75, 1: 0.99})  # both splits, every seed
    assert found["a"]["first-k"] == (4e-3, {0: 0.79}, {0: 0.78})


def test_tuned_gains_are_paired_over_the_seeds_both_arms_have():
    from tables import tuned, tuned_gains, tuned_table

    runs = []
    for arm, tests in (("advised-x", (0.70, 0.80, 0.81)), ("first-k", (0.72, 0.79, 0.78)), ("random", (0.5,) * 3)):
        runs += [record("a", arm, 0, 0.6 + i / 100, t, lr=lr) for i, (lr, t) in enumerate(zip((1e-3, 2e-3, 4e-3),
                                                                                             tests))]
    runs += [record("a", "advised-x", 1, 0.5, 0.83, lr=4e-3), record("a", "first-k", 1, 0.5, 0.80, lr=4e-3)]
    found = tuned(runs, "s")
    gain, se, best, seeds = tuned_gains(found, ("first-k", "random"))["advised-x"]["a"]
    assert (best, seeds) == ("first-k", 2)
    assert gain == pytest.approx(100 * ((0.81 - 0.78) + (0.83 - 0.80)) / 2)
    assert se == pytest.approx(0.0, abs=1e-9)
    lines = tuned_table(runs, "s", ("first-k", "random"))
    assert "| advised-x | 1 | +3.00 | a (+3.0) | none |" in lines


def test_tuned_gains_on_validation_pick_the_best_default_there_and_pair_every_seed():
    from tables import tuned, tuned_gains, tuned_table

    runs = []
    # validation and test disagree on the best default: first-k wins validation, random wins test
    for arm, (val, test) in {"advised-x": (0.80, 0.70), "first-k": (0.78, 0.60), "random": (0.70, 0.75)}.items():
        for seed, shift in enumerate((0.0, 0.02)):
            runs += [record("a", arm, seed, val + shift - (lr != 4e-3) / 10, test + shift, lr=lr)
                     for lr in (1e-3, 2e-3, 4e-3)]
    found = tuned(runs, "s")
    gain, se, best, seeds = tuned_gains(found, ("first-k", "random"), "validation")["advised-x"]["a"]
    assert (best, seeds) == ("first-k", 2) and gain == pytest.approx(2.0) and se == pytest.approx(0.0, abs=1e-9)
    gain, _, best, _ = tuned_gains(found, ("first-k", "random"))["advised-x"]["a"]
    assert (best, gain) == ("random", pytest.approx(-5.0))
    lines = tuned_table(runs, "s", ("first-k", "random"))
    assert "| a | advised-x | 0.004 | 0.8100 | 0.7100 (2) |" in lines  # validation is a mean over both seeds
    assert "| advised-x | a | +2.0 ± 0.0 | first-k | 2 |" in lines  # the validation table
    assert "| advised-x | a | -5.0 ± 0.0 | random | 2 |" in lines  # the test table


def test_sft_study_chooses_each_arms_rate_on_validation_and_pairs_the_nll_reduction():
    import importlib.util

    spec = importlib.util.spec_from_file_location("sft_run", Path(__file__).resolve().parents[1] / "benchmarks" /
                                                  "sft" / "run.py")
    sft = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sft)

    def run(arm, seed, lr, validation, test):
        return {"task": "t", "arm": arm, "seed": seed, "learning_rate": lr, "validation_nll": validation,
                "test_nll": test, "exact_match": 0.5, "forgetting": 0.1}

    runs = [run("advised", 0, 1e-3, 2.0, 2.0), run("advised", 1, 1e-3, 2.0, 2.2),
            run("advised", 0, 2e-3, 2.5, 1.0), run("advised", 1, 2e-3, 2.5, 1.0),  # best test, worse validation
            run("lora-qv", 0, 1e-3, 2.1, 2.5), run("lora-qv", 1, 1e-3, 2.1, 2.5),
            run("lora-all", 0, 1e-3, 3.0, 1.5), run("lora-all", 1, 1e-3, 3.0, 1.5)]  # worse validation than qv
    text = sft.tables(runs)
    assert "| advised | 0.001 | 2.0000 | 2.1000 |" in text  # the rate chosen on validation, not test
    # vs lora-qv (best default on validation): (2.5 - 2.0) / 2.5 = 20 %, (2.5 - 2.2) / 2.5 = 12 %: mean 16, SE 4
    assert "(lora-qv): +16.00 % ± 4.00 lower over 2 seed(s)" in text
    reduction = sft.advised_reduction(runs, sft.chosen_rates(runs))  # what SFT recipes quote
    assert reduction["best_default"] == "lora-qv" and reduction["percent_lower"] == pytest.approx(16.0)
    rival = [run("eva", 0, 1e-3, 9.0, 2.5), run("eva", 1, 1e-3, 9.0, 1.1)]  # (2.5-2)/2.5 = 20 %, (1.1-2.2)/1.1 = -100 %
    with_rival = sft.advised_reduction(runs + rival, sft.chosen_rates(runs + rival))
    assert with_rival["percent_lower"] == pytest.approx(16.0)  # a rival is never the best default
    assert with_rival["percent_lower_than_rivals"] == {"eva": pytest.approx(-40.0)}
    # a candidate rule is compared as the advised arm is, and against the advised arm, paired
    candidate = [run("advised-rslora", 0, 1e-3, 1.9, 1.8), run("advised-rslora", 1, 1e-3, 1.9, 2.2)]
    text = sft.tables(runs + candidate)  # vs lora-qv: 28 % and 12 %; vs advised: 10 % and 0 %
    assert "Default rule (what recommend writes) advised-rslora vs the best default (lora-qv): +20.00 % ± 8.00 " \
           "lower over 2 seed(s); vs advised: +5.00 % lower over 2 seed(s)." in text
    assert sft.advised_reduction(runs + candidate, sft.chosen_rates(runs + candidate),
                                 sft.DEFAULT_RULE)["percent_lower"] == pytest.approx(20.0)  # what recipes quote


def test_sft_study_chooses_rates_on_the_seeds_the_whole_grid_ran():
    """A rate run at more seeds once chosen must not win the choice by its later seeds: the grid
    compares rates on the seeds every rate ran, and prints the validation NLL of each."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sft_run", Path(__file__).resolve().parents[1] / "benchmarks" /
                                                  "sft" / "run.py")
    sft = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sft)

    def run(seed, lr, validation):
        return {"task": "t", "arm": "advised", "seed": seed, "learning_rate": lr, "validation_nll": validation,
                "test_nll": validation, "exact_match": 0.0, "forgetting": 0.0}

    runs = [run(0, 1e-3, 2.0), run(1, 1e-3, 1.0), run(2, 1e-3, 1.0), run(0, 3e-3, 1.9)]  # 1e-3 has the lower mean
    assert sft.chosen_rates(runs) == {"advised": 3e-3}  # but on seed 0, the seed both ran, 3e-3 is lower
    assert "| advised | 2.0000 | **1.9000** | 0 |" in sft.tables(runs)  # the figures the choice compared
    assert sft.chosen_rates(runs[:3]) == {"advised": 1e-3}
    apart = [run(0, 1e-3, 2.0), run(1, 3e-3, 1.5)]  # no seed ran both rates: compared on all, and said so
    assert sft.chosen_rates(apart) == {"advised": 3e-3}
    assert "| advised | 2.0000 | **1.5000** | 0, 1 (none shared by every rate) |" in sft.tables(apart)


def test_tuned_rates_compare_the_rival_apart_from_the_defaults():
    from tables import tuned_table

    runs = []
    for lr, (advised, qv, eva) in {1e-3: (0.70, 0.60, 0.50), 2e-3: (0.80, 0.75, 0.74), 4e-3: (0.75, 0.70, 0.90)}.items():
        runs += [record("a", "advised-x", 0, advised, advised, lr=lr), record("a", "lora-qv", 0, qv, qv, lr=lr),
                 record("a", "eva", 0, eva, eva, lr=lr)]
    lines = tuned_table(runs, "s", ("lora-qv",), ("eva",))
    assert "| a | eva | 0.004 | 0.9000 | 0.9000 (1) |" in lines  # each arm at its own best rate
    assert "| advised-x | a | +5.0 | lora-qv | 1 |" in lines  # 0.80 at 2e-3 against lora-qv's 0.75 at 2e-3
    assert "| advised-x | a | -10.0 | eva | 1 |" in lines  # against eva's 0.90 at 4e-3: listed as harm
    assert "| advised-x | 1 | -10.00 | a (-10.0) | a (-10.0) |" in lines


def test_a_run_recorded_in_the_results_file_is_read_back_not_retrained(monkeypatch, tmp_path):
    """A fresh clone has no run folders: the committed results file is what makes the suite
    resume without retraining, so a recorded key must never reach the trainer."""
    import run as suite

    trained = []
    monkeypatch.setattr(suite, "run_key", lambda recipe: recipe)
    monkeypatch.setattr(suite, "trained_metrics", lambda recipe, work: trained.append(recipe) or (
        {"validation_best": {"accuracy": 0.5}, "test": {"accuracy": 0.4}, "trainable_parameters": 7},
        tmp_path / recipe))
    recorded = {"known": {"validation": 0.9, "test": 0.8, "run": "known", "trainable": 21506, "seed": 0}}
    assert suite.train_arm("known", tmp_path, recorded) == {"validation": 0.9, "test": 0.8, "run": "known",
                                                            "trainable": 21506}
    assert trained == []
    assert suite.train_arm("new", tmp_path, recorded)["test"] == 0.4 and trained == ["new"]


def test_the_default_can_be_chosen_on_validation_and_reported_on_test(tmp_path):
    """Task a: random is best on validation (0.90) but worst on test; held apart, the advice is
    compared on test with the default chosen on validation, not with the test split's best."""
    held_apart = gains(RUNS, "s", ("first-k", "random"), "test", 2e-3, chosen_on="validation")["advised-x"]
    assert held_apart["a"][2] == "random" and held_apart["a"][0] == pytest.approx(100 * (0.72 - 0.60))
    assert gains(RUNS, "s", ("first-k", "random"), "test", 2e-3)["advised-x"]["a"][2] == "first-k"
    text = write_tables({"model": "m", "runs": RUNS}, {"rocoft": ("first-k", "random")}, {}, {"s": "rocoft"},
                        tmp_path / "t.md")
    assert "Paired gain over the default chosen on validation, test split:" in text


def test_verdict_checks_both_goals_per_study_and_counts_paired_seeds_only():
    """The verdict reads each goal off the test split: harm is any task more than 0.5 points
    below the best default, the win is the mean over tasks, and the seeds are those both arms have."""
    from tables import verdict_table

    runs = [record("a", "advised-greedy", s, 0.8, t) for s, t in enumerate((0.80, 0.82, 0.84))]
    runs += [record("a", "first-k", s, 0.8, t) for s, t in enumerate((0.78, 0.80))]  # seed 2 missing: 2 paired
    runs += [record("b", "advised-greedy", 0, 0.8, 0.700), record("b", "first-k", 0, 0.8, 0.706)]  # -0.6: harm
    runs += [record("b", "advised-greedy", 0, 0.8, 0.9, lr=4e-3)]  # another rate: never in the shared row
    lines = verdict_table(runs, {"rocoft": ("first-k", "random")}, {}, {"s": "rocoft"}, "advised-greedy")
    assert len(lines) == 3  # header, rule, one row: no learning-rate grid, so no tuned row
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[:6] == ["s", "0.002", "best default", "2", "1–2", "+0.70"]  # (+2.0 - 0.6) / 2
    assert cells[6].startswith("b -0.6") and cells[7] == "b (-0.6)" and cells[8:] == ["no", "no"]
    runs[-3:-1] = [record("b", "advised-greedy", 0, 0.8, 0.730), record("b", "first-k", 0, 0.8, 0.706)]
    cells = [c.strip() for c in verdict_table(runs, {"rocoft": ("first-k",)}, {}, {"s": "rocoft"},
                                              "advised-greedy")[2].strip("|").split("|")]
    assert cells[5] == "+2.20" and cells[7:] == ["none", "yes", "yes"]  # (+2.0 + 2.4) / 2


def test_sft_prediction_tables_correlate_seed_0_of_the_arms_that_start_from_b_zero():
    """benchmarks/sft/predict.py: a predictor whose order is the validation NLL's reversed gets
    ρ = -1, its reverse +1; seed 1, other step counts and the data-driven inits (EVA, LoRA-GA,
    whose kernel at θ0 is not the expected one) are left out."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sft_predict", Path(__file__).resolve().parents[1] / "benchmarks" /
                                                  "sft" / "predict.py")
    predict = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(predict)
    assert {"eva", "lora-ga", "advised-lora-ga"}.isdisjoint(predict.FROM_B_ZERO)
    assert {"advised", "lora-all", "advised-rslora"} <= set(predict.FROM_B_ZERO)

    def run(arm, nll, seed=0, steps=60, lr=1e-2):
        return {"task": "t", "arm": arm, "seed": seed, "steps": steps, "learning_rate": lr, "validation_nll": nll}

    arms = ["advised", "lora-qv", "lora-all", "lora-mlp"]
    runs = [run(arm, 3.0 + i / 10) for i, arm in enumerate(arms)]
    runs += [run("advised", 9.0, seed=1), run("lora-qv", 0.1, steps=10), run("eva", 0.0), run("lora-all", 1.0, lr=2e-2)]
    measured = predict.validation_by_rate(runs, "t")
    assert measured == {1e-2: {arm: pytest.approx(3.0 + i / 10) for i, arm in enumerate(arms)}, 2e-2: {"lora-all": 1.0}}
    predicted = {arm: {"first step": 10.0 - i, "label signal": float(i), "trace": 1.0, "effective rank": -float(i),
                       "1/κ": float(i)} for i, arm in enumerate(arms)}
    predicted["lora-all"]["trace"] = 2.0
    lines = predict.task_tables("t", predicted, measured)
    # trace (1, 1, 2, 1): ties take their mean rank, so ρ = 1/√15 = +0.26 by hand
    assert "| 0.01 | 4 | -1.00 | +1.00 | +0.26 | -1.00 | +1.00 |" in lines
    # lora-all's best is its 2e-2 run (1.0): NLL ranks (2, 3, 1, 4); trace then gives -3/√15
    assert "| each arm's best | 4 | -0.40 | +0.40 | -0.77 | -0.40 | +0.40 |" in lines
    assert not any(line.startswith("| 0.02 |") for line in lines)  # one arm is no correlation


def test_an_sft_probe_at_another_step_count_leaves_the_study_tables_and_the_recipes_evidence(tmp_path, monkeypatch):
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("sft_run", Path(__file__).resolve().parents[1] / "benchmarks" /
                                                  "sft" / "run.py")
    sft = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sft)

    def run(arm, steps, nll):
        return {"task": "t", "arm": arm, "seed": 0, "learning_rate": 1e-2, "steps": steps, "run": f"{arm}{steps}",
                "validation_nll": nll, "test_nll": nll, "exact_match": 0.0, "forgetting": 0.0, "trainable": 10}

    (tmp_path / "results").mkdir()
    runs = [run(arm, steps, nll) for steps in (60, 240) for arm, nll in
            (("advised-rslora", 2.0), ("lora-qv", 2.5), ("lora-all", 2.4))]
    (tmp_path / "results" / f"{sft.MODEL}.json").write_text(json.dumps({"model": sft.MODEL, "runs": runs}))
    monkeypatch.setattr(sft, "HERE", tmp_path)
    monkeypatch.setattr(sft, "EVIDENCE", tmp_path / "sft_evidence.json")
    assert sft.main(["--tables-only", "--steps", "240"]) == 0
    probe = (tmp_path / "results" / f"{sft.MODEL}-240-steps.md").read_text().splitlines()
    sentence = next(i for i, line in enumerate(probe) if line.startswith("Default rule"))
    assert probe[sentence - 1] == "" and probe[sentence - 2].startswith("| advised-rslora")  # the table ends first
    assert not (tmp_path / "results" / f"{sft.MODEL}.md").exists() and not (tmp_path / "sft_evidence.json").exists()
    assert sft.main(["--tables-only"]) == 0
    evidence = json.loads((tmp_path / "sft_evidence.json").read_text())
    assert evidence["steps"] == 60 and evidence["tasks"]["t"]["best_default"] == "lora-all"
    assert evidence["use_rslora"] is True  # what recommend writes for the default rule on the study's profiles
    longer = evidence["longer_runs"]["240"]["t"]  # the probe is quoted beside the study, not instead of it
    assert longer["best_default"] == "lora-all" and longer["seeds"] == 1
    assert evidence["tasks"]["t"]["percent_lower"] == pytest.approx(100 * (2.4 - 2.0) / 2.4, abs=1e-3)  # rounded
    assert (tmp_path / "results" / f"{sft.MODEL}.md").exists()
