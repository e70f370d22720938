"""The uncertainty block of a recipe: the paired bootstrap, the suite's measured gains, the sentence."""

from __future__ import annotations

import json

import pytest
import torch

from ntk_advisor.advice import uncertainty as unc


def test_paired_interval_properties():
    ones, zeros = torch.ones(40, dtype=torch.float64), torch.zeros(40, dtype=torch.float64)
    same = unc.paired_gain_interval(ones, ones)
    assert same["estimate"] == same["low"] == same["high"] == 0.0
    better = unc.paired_gain_interval(ones, zeros)
    assert better["estimate"] == better["low"] == better["high"] == 100.0
    mixed_a = (torch.arange(40) % 2).to(torch.float64)
    mixed_b = (torch.arange(40) % 4 == 0).to(torch.float64)
    found = unc.paired_gain_interval(mixed_a, mixed_b, seed=3)
    assert found["estimate"] == pytest.approx(100 * (0.5 - 0.25))
    assert found["low"] < found["estimate"] < found["high"]
    flipped = unc.paired_gain_interval(mixed_b, mixed_a, seed=3)
    assert flipped["estimate"] == -found["estimate"]
    assert unc.paired_gain_interval(mixed_a, mixed_b, seed=3) == found  # seeded: the same recipe twice


def write_evidence(path):
    path.write_text(json.dumps({"studies": [
        {"name": "rocoft-21.5k", "model": "minilm-l6", "method": "rocoft", "budget": 21_506,
         "rules": {"advised-uniform": {"a": 1.0, "b": 3.0}}},
        {"name": "rocoft-100k", "model": "minilm-l6", "method": "rocoft", "budget": 100_000,
         "rules": {"advised-uniform": {"a": -0.5, "b": 0.5, "c": 1.5}, "advised-signal": {"a": -4.0}}},
    ]}))
    return path


def test_suite_gain_takes_the_nearest_budget(tmp_path):
    path = write_evidence(tmp_path / "suite.json")
    near_small = unc.suite_gain("rocoft", "advised-uniform", 30_000, path)
    assert near_small["study"] == "rocoft-21.5k" and near_small["mean"] == 2.0 and near_small["worst"] == 1.0
    near_large = unc.suite_gain("rocoft", "advised-uniform", 80_000, path)
    assert (near_large["tasks"], near_large["mean"], near_large["worst"], near_large["best"]) == (3, 0.5, -0.5, 1.5)
    assert unc.suite_gain("rocoft", "advised-free", 80_000, path) is None
    assert unc.suite_gain("rocoft", "advised-signal", 40_000, path) is None  # 100k is more than twice 40k
    assert unc.suite_gain("lora", "advised-greedy", 80_000, path) is None
    assert unc.suite_gain("rocoft", "advised-uniform", 80_000, tmp_path / "missing.json") is None


def test_sentence_says_what_is_known():
    block = {"safe_allocation": True, "profile_gain_points": {"estimate": 1.0, "low": -2.0, "high": 4.0,
                                                              "examples": 64}}
    text = unc._sentence(block, "first-k")
    assert text.startswith("No suite measurement covers this method and rule yet")
    assert "safe allocation" in text and "+1.0 points over first-k" in text and "not yet checked" in text
    block |= {"safe_allocation": False, "suite_gain_points": {
        "tasks": 3, "model": "minilm-l6", "study": "s", "mean": 0.5, "worst": -0.5, "best": 1.5,
        "profile_check": {"rows": 6, "sign_agrees": 0, "inside_interval": 1}}}
    text = unc._sentence(block, "first-k")
    assert text.startswith("Expected gain over the best default placement: +0.5 points, as measured on 3 suite tasks")
    assert "safe allocation" not in text and "worst task -0.5" in text
    assert "sign on 0 of 6 runs, so it is not used as the prediction" in text


def test_tuned_learning_rates_are_quoted_when_the_suite_has_them(tmp_path):
    path = tmp_path / "suite.json"
    path.write_text(json.dumps({"studies": [
        {"name": "rocoft-100k", "model": "minilm-l6", "method": "rocoft", "budget": 100_000, "learning_rate": 2e-3,
         "rules": {"advised-greedy": {"a": 2.0, "b": 4.0}},
         "tuned_learning_rates": {"advised-greedy": {"a": {"gain": -1.0, "seeds": 3}, "b": {"gain": 0.0, "seeds": 1}}}},
    ]}))
    found = unc.suite_gain("rocoft", "advised-greedy", 100_000, path)
    assert found["at_tuned_learning_rates"] == {"tasks": 2, "mean": -0.5, "worst": -1.0, "per_task": {
        "a": {"gain": -1.0, "seeds": 3}, "b": {"gain": 0.0, "seeds": 1}}}
    text = unc._sentence({"safe_allocation": False, "suite_gain_points": found}, "first-k")
    assert "+3.0 points" in text
    assert "own best learning rate (2 tasks) the gain was -0.5 points on average (worst task -1.0)" in text
    older = unc.suite_gain("rocoft", "advised-uniform", 100_000, write_evidence(tmp_path / "old.json"))
    assert "at_tuned_learning_rates" not in older  # evidence without a grid says nothing about tuned rates
    assert "own best learning rate" not in unc._sentence({"safe_allocation": False, "suite_gain_points": older}, "x")


def test_sft_recipes_quote_the_sft_study_only_for_what_it_measured(tmp_path):
    from ntk_advisor.advice.uncertainty import sft_uncertainty

    path = tmp_path / "sft.json"
    path.write_text(json.dumps({"model": "m", "steps": 60, "split": "test", "method": "lora", "rule": "advised-greedy",
                                "lora_init": "default", "use_rslora": True, "budget": 460_800, "tasks": {
        "a": {"best_default": "lora-all", "percent_lower": -0.04, "se": None, "seeds": 1},
        "b": {"best_default": "lora-qv", "percent_lower": 1.5, "se": 0.25, "seeds": 3,
              "percent_lower_than_rivals": {"eva": -2.5}}},
        "longer_runs": {"180": {"b": {"best_default": "lora-all", "percent_lower": -1.11, "se": 0.22,
                                      "seeds": 3}}}}))
    block = sft_uncertainty("lora-qv", "lora", "advised-greedy", False, 460_800, use_rslora=True, path=path)
    assert block["sft_study_nll_reduction"]["tasks"]["b"]["percent_lower"] == 1.5
    text = block["sentence"]
    assert "best default placement's by: a -0.04 % vs lora-all (1 seed); b +1.50 % ± 0.25 vs lora-qv (3 seeds);" in text
    assert "data-driven initializations' by: b -2.50 % vs eva;" in text  # a rival is never called a default
    assert "; in longer runs of 180 steps by: b -1.11 % ± 0.22 vs lora-all (3 seeds)." in text
    assert "sft_study_nll_reduction" in sft_uncertainty("x", "lora", "advised-greedy", False, 300_000,
                                                        use_rslora=True, path=path)
    never_measured = [("rocoft", "advised-greedy", 460_800, "default", True),
                      ("lora", "advised-free", 460_800, "default", True),
                      ("lora", "advised-step1", 460_800, "default", True),  # another rank step
                      ("lora", "advised-greedy", 200_000, "default", True),  # more than a factor of two away
                      ("lora", "advised-greedy", 460_800, "loraga", True),  # another initialization
                      ("lora", "advised-greedy", 460_800, "default", False)]  # another scale (α = r)
    for method, rule, budget, init, rslora in never_measured:
        other = sft_uncertainty("first-k", method, rule, False, budget, init, rslora, path)
        assert "sft_study_nll_reduction" not in other and "unknown" in other["sentence"], (method, rule, budget, init)
    missing = sft_uncertainty("lora-qv", "lora", "advised-greedy", False, path=tmp_path / "none.json")
    assert "unknown" in missing["sentence"]
