"""recommend(): budgets, baselines, evidence, and consistency with the profile's kernels."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import tiny_batch, tiny_classifier

from ntk_advisor.advice.recommend import RecommendConfig, placement_kernel, recommend
from ntk_advisor.errors import RecipeError
from ntk_advisor.inputs.models import discover_targets
from ntk_advisor.methods import Slices, get_method
from ntk_advisor.profiling.capture import capture
from ntk_advisor.profiling.folder import save_profile
from ntk_advisor.profiling.profiler import ProfileConfig, profile_model
from ntk_advisor.recipe.check import check_targets, trainable_counts

LABELS = torch.tensor([0, 1, 0, 1, 1, 0])


def targets_of(recipe):
    loaded = tiny_classifier("bert")
    return {t.name: t for t in discover_targets(loaded.backbone)}


@pytest.mark.parametrize("objective", ["alignment", "loo", "lambda_min", "condition", "trace"])
def test_advised_rocoft_respects_budget_and_covers_modules(tiny_profile_dir, objective):
    config = RecommendConfig(budget=400, objective=objective)
    recipe = recommend(tiny_profile_dir, config)
    targets = targets_of(recipe)
    check_targets(recipe, targets)
    counts = trainable_counts(recipe, targets, head_params=2 * 16 + 2)
    assert counts["total"] == recipe.evidence["trainable"]["total"] <= 400
    block_modules = [t for t in targets.values() if t.layer is not None]
    assert {t.module for t in recipe.targets} == {t.name for t in block_modules}  # coverage seeds every module
    if objective == "alignment":
        assert recipe.evidence["predicted"]["alignment"] == pytest.approx(recipe.evidence["search"]["objective_value"])


@pytest.mark.parametrize("method,name", [(m, n) for m in ("rocoft", "lora") for n in get_method(m).baselines])
def test_baselines_fit_the_budget(tiny_profile_dir, method, name):
    recipe = recommend(tiny_profile_dir, RecommendConfig(method=method, placement=name, budget=600, module_rank=2))
    targets = targets_of(recipe)
    check_targets(recipe, targets)
    assert recipe.evidence["trainable"]["total"] <= 600
    if name == "first-k":
        assert all(t.indices == tuple(range(len(t.indices))) for t in recipe.targets)
    if name == "lora-qv":
        assert {targets[t.module].role for t in recipe.targets} == {"query", "value"}
    assert set(recipe.evidence["baselines_same_budget"]) == {"first-k", "lora-qv"}


def test_wanda_min_and_max_pick_opposite_ends(tiny_profile_dir):
    low = recommend(tiny_profile_dir, RecommendConfig(placement="wanda-min", budget=600))
    high = recommend(tiny_profile_dir, RecommendConfig(placement="wanda-max", budget=600))
    assert all(set(a.indices).isdisjoint(b.indices) for a, b in zip(low.targets, high.targets))


def test_all_rows_reproduce_the_profiled_module_kernel(tiny_profile_dir):
    captured = capture(__import__("ntk_advisor").load_profile(tiny_profile_dir))
    name = "bert.encoder.layer.1.intermediate.dense"
    everything = {name: Slices("rows", tuple(range(24)))}
    kernel = placement_kernel(captured, everything, "rocoft")
    stored = captured.profile.kernels[name]
    assert float((kernel - stored).norm() / stored.norm()) < 1e-10
    columns = placement_kernel(captured, {name: Slices("cols", tuple(range(16)))}, "rocoft")
    assert float((columns - stored).norm() / stored.norm()) < 1e-10


def test_lora_advice_and_bad_budgets(tiny_profile_dir):
    recipe = recommend(tiny_profile_dir, RecommendConfig(method="lora", budget=1000, module_rank=2))
    assert all(t.rank and t.rank % 2 == 0 for t in recipe.targets)
    assert recipe.peft["target_modules"] == [t.module for t in recipe.targets]
    with pytest.raises(RecipeError, match="does not cover the head"):
        recommend(tiny_profile_dir, RecommendConfig(budget=20))
    with pytest.raises(RecipeError, match="below the cheapest item"):
        recommend(tiny_profile_dir, RecommendConfig(budget=40, placement="first-k"))
    with pytest.raises(RecipeError, match="positive"):
        recommend(tiny_profile_dir, RecommendConfig(budget=-5))
    with pytest.raises(RecipeError, match="unknown --placement 'lora-qv' for rocoft"):
        recommend(tiny_profile_dir, RecommendConfig(placement="lora-qv"))


def test_more_budget_never_lowers_the_trace(tiny_profile_dir):
    traces = [recommend(tiny_profile_dir, RecommendConfig(budget=b, objective="trace")).evidence["predicted"]["trace"]
              for b in (200, 400, 800)]
    assert traces == sorted(traces) and all(math.isfinite(t) for t in traces)


@pytest.mark.slow
def test_real_advice_loads_into_peft(tmp_path):
    """advise on real minilm-l6: the LoRA recipe's peft section builds a PEFT model whose trainable
    LoRA weights equal the recipe's count."""
    from peft import LoraConfig, get_peft_model

    from ntk_advisor.inputs.models import load_classifier
    from ntk_advisor.profiling.profiler import profile

    folder = save_profile(profile(ProfileConfig(samples=16, max_length=24, head="random")), tmp_path / "p")
    recipe = recommend(folder, RecommendConfig(method="lora", budget=60_000))
    model = load_classifier("minilm-l6", num_labels=2, with_tokenizer=False).backbone
    peft_model = get_peft_model(model, LoraConfig(**recipe.peft))
    lora = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    assert lora == recipe.evidence["trainable"]["weights"]
    rocoft = recommend(folder, RecommendConfig(budget=60_000))
    assert rocoft.evidence["trainable"]["total"] <= 60_000
    assert len(rocoft.targets) == 36  # coverage: every block Linear gets at least one row


def test_relative_gradient_norms_match_autograd(tiny_profile_dir):
    from ntk_advisor import load_profile
    from ntk_advisor.inputs.models import load_classifier

    profile = load_profile(tiny_profile_dir)
    captured = capture(profile)
    loaded = load_classifier(profile.settings["model"], 2, dtype=torch.float64, with_tokenizer=False)
    loaded.backbone.load_state_dict(profile.head, strict=False)
    batch = {k: profile.inputs[k] for k in ("input_ids", "attention_mask")}
    loss = torch.nn.functional.cross_entropy(loaded.logits_model(**batch), profile.inputs["labels"])
    loss.backward()
    for name, value in captured.grad_norms.items():
        weight = loaded.backbone.get_submodule(name).weight
        assert value == pytest.approx(float(weight.grad.norm() / weight.norm().detach()), rel=1e-8), name


def test_bias_free_head_and_small_budget_coverage(tmp_path):
    """A Llama head has no bias; a budget too small for every module seeds the best-aligned ones."""
    loaded = tiny_classifier("llama")
    loaded.backbone.save_pretrained(tmp_path / "model")
    config = ProfileConfig(model=str(tmp_path / "model"), data="tiny", samples=6, max_length=7, dtype="float64")
    folder = save_profile(profile_model(loaded, tiny_batch(), LABELS, config, lambda *a: None), tmp_path / "p")
    recipe = recommend(folder, RecommendConfig(budget=2 * 16 + 16 * 3))  # the head + three 16-wide rows
    targets = {t.name: t for t in discover_targets(tiny_classifier("llama").backbone)}
    assert recipe.evidence["trainable"]["head"] == 2 * 16
    assert trainable_counts(recipe, targets, head_params=2 * 16)["total"] == recipe.evidence["trainable"]["total"]
    layers = {targets[t.module].layer for t in recipe.targets}
    assert len(recipe.targets) == 3 and layers != {0}  # not simply the first modules in model order


def test_coverage_rows_follow_the_label_gradient_scores_when_the_profile_has_them(tmp_path):
    """recommend picks each module's row by rows_signal (the large-sample score) when present,
    by the probe sample's rows_alignment otherwise."""
    loaded = tiny_classifier("bert")
    loaded.backbone.save_pretrained(tmp_path / "model")
    config = ProfileConfig(model=str(tmp_path / "model"), data="tiny", samples=6, max_length=7, dtype="float64")
    result = profile_model(loaded, tiny_batch(), LABELS, config, lambda *a: None)
    blocks = [t for t in discover_targets(loaded.backbone) if t.layer is not None]
    budget = 2 * 16 + 2 + sum(t.d_in for t in blocks)  # the head + one row of every block module
    plain = recommend(save_profile(result, tmp_path / "plain"), RecommendConfig(budget=budget))
    by_alignment = {t.name: int(result.scores["rows_alignment"][t.name].argmax()) for t in blocks}
    assert {t.module: t.indices for t in plain.targets} == {n: (i,) for n, i in by_alignment.items()}
    # A signal whose best row is the probe's worst-aligned one: the choice must follow it.
    result.scores["rows_signal"] = {n: -v for n, v in result.scores["rows_alignment"].items()}
    result.scores["cols_signal"] = {n: v.clone() for n, v in result.scores["cols_alignment"].items()}
    signalled = recommend(save_profile(result, tmp_path / "signal"), RecommendConfig(budget=budget))
    by_signal = {t.name: int(result.scores["rows_signal"][t.name].argmax()) for t in blocks}
    assert by_signal != by_alignment
    assert {t.module: t.indices for t in signalled.targets} == {n: (i,) for n, i in by_signal.items()}


def test_uniform_allocation_spreads_rows_evenly_and_bad_allocation_is_refused(tiny_profile_dir):
    targets = targets_of(None)
    blocks = [t for t in targets.values() if t.layer is not None]
    rows = 3
    budget = 2 * 16 + 2 + rows * sum(t.d_in for t in blocks)  # exactly three rows of every block module
    recipe = recommend(tiny_profile_dir, RecommendConfig(budget=budget, allocation="uniform"))
    assert {t.module: len(t.indices) for t in recipe.targets} == {t.name: rows for t in blocks}
    greedy = recommend(tiny_profile_dir, RecommendConfig(budget=budget, allocation="greedy"))
    assert {len(t.indices) for t in greedy.targets} != {rows}  # the objective concentrates the extra rows
    free = recommend(tiny_profile_dir, RecommendConfig(budget=budget, allocation="free"))
    assert recipe.evidence["trainable"]["total"] <= budget and free.evidence["trainable"]["total"] <= budget
    with pytest.raises(RecipeError, match="unknown --allocation 'even'"):
        recommend(tiny_profile_dir, RecommendConfig(allocation="even"))


def test_lora_ranks_follow_the_label_gradient_spectrum_with_diminishing_returns(tmp_path, monkeypatch):
    """Module A's spectrum (9, 9, 1, 1, ...) and B's (4, 4, ...): A's first step, then B's, then
    A's second; every other module is flat zero and gets nothing."""
    loaded = tiny_classifier("bert")
    loaded.backbone.save_pretrained(tmp_path / "model")
    config = ProfileConfig(model=str(tmp_path / "model"), data="tiny", samples=6, max_length=7, dtype="float64")
    result = profile_model(loaded, tiny_batch(), LABELS, config, lambda *a: None)
    blocks = [t for t in discover_targets(loaded.backbone) if t.layer is not None]
    a, b = blocks[0], blocks[1]  # both 16x16: one rank costs 32 weights
    spectra = {t.name: torch.zeros(min(t.d_in, t.d_out), dtype=torch.float64) for t in blocks}
    spectra[a.name][:4] = torch.tensor([9.0, 9.0, 1.0, 1.0])
    spectra[b.name][:2] = torch.tensor([4.0, 4.0])
    result.scores["signal_spectrum"] = spectra
    result.scores["rows_signal"] = {t.name: torch.cat([spectra[t.name], torch.zeros(t.d_out - len(spectra[t.name]),
                                                                                   dtype=torch.float64)])
                                    for t in blocks}  # each module's rows sum to its spectrum's ‖G‖²_F
    folder = save_profile(result, tmp_path / "p")
    head = 2 * 16 + 2
    recipe = recommend(folder, RecommendConfig(method="lora", budget=head + 3 * 2 * 32))  # three rank-2 steps
    assert {t.module: t.rank for t in recipe.targets} == {a.name: 4, b.name: 2}
    assert recipe.evidence["objective"] == "label_signal"
    assert recipe.evidence["predicted"]["label_signal"] == pytest.approx((9 + 9 + 1 + 1 + 4 + 4) / 28)
    smaller = recommend(folder, RecommendConfig(method="lora", budget=head + 2 * 2 * 32))
    assert {t.module: t.rank for t in smaller.targets} == {a.name: 2, b.name: 2}  # diminishing returns in A
    free = recommend(folder, RecommendConfig(method="lora", budget=head + 3 * 2 * 32, allocation="free"))
    assert {t.module for t in free.targets} != {a.name, b.name}  # the kernel objective ignores the spectrum
    single = recommend(folder, RecommendConfig(method="lora", budget=head + 3 * 32, rank_step=1))  # 9, 9, then 4
    assert {t.module: t.rank for t in single.targets} == {a.name: 2, b.name: 1}
    # each recipe quotes the suite's measurements of its own rule, never another rank step's
    evidence = tmp_path / "suite.json"
    measured = {"advised-greedy": {"t": 1.0}, "advised-step1": {"t": -2.0}}
    evidence.write_text(json.dumps({"studies": [{"name": "lora-tiny", "model": "m", "method": "lora",
                                                 "budget": head + 96, "rules": measured}]}))
    monkeypatch.setattr("ntk_advisor.advice.uncertainty.SUITE_EVIDENCE", evidence)
    for config, rule, mean in ((RecommendConfig(method="lora", budget=head + 96), "advised-greedy", 1.0),
                               (RecommendConfig(method="lora", budget=head + 96, rank_step=1), "advised-step1", -2.0)):
        quoted = recommend(folder, config).evidence["uncertainty"]
        assert (quoted["rule"], quoted["suite_gain_points"]["rule"], quoted["suite_gain_points"]["mean"]) == \
            (rule, rule, mean)
    with pytest.raises(RecipeError, match="rank_step must be 1 or more"):
        recommend(folder, RecommendConfig(method="lora", rank_step=0))
    rocoft = recommend(folder, RecommendConfig(budget=head + 32))  # two 16-weight rows: the best-aligned ones
    assert {t.module: t.indices for t in rocoft.targets} == {a.name: (0,), b.name: (0,)}
    assert rocoft.evidence["predicted"]["label_signal"] == pytest.approx((9 + 4) / 28)
    # allocation signal: rank 1 on every module first (lora-all's spread), then steps by the spectrum
    # from each module's second singular value: A's (9 + 1) beats B's (4 + 0)
    ones = sum(t.d_in + t.d_out for t in blocks)
    spread = recommend(folder, RecommendConfig(method="lora", budget=head + ones + 2 * 32, allocation="signal"))
    assert {t.module: t.rank for t in spread.targets} == {t.name: 3 if t.name == a.name else 1 for t in blocks}
    assert spread.evidence["trainable"]["total"] <= head + ones + 2 * 32
    assert spread.evidence["uncertainty"]["rule"] == "advised-signal"
    few = recommend(folder, RecommendConfig(method="lora", budget=head + 32 + 32, allocation="signal"))
    assert {t.module: t.rank for t in few.targets} == {a.name: 1, b.name: 1}  # too few for all: the best first


# ----------------------------------------------------------------------------- --method auto
def _comparisons(path, per_task, budget=21_506, tuned=None):
    """A suite evidence file; ``per_task`` maps task -> (validation, test) pairs of {method: accuracy}."""
    import json

    def entry(rate, found):
        return {"budget": budget, "model": "minilm-l6", "steps": 100, "learning_rate": rate,
                "per_task": {task: test | {"validation": validation, "seeds": 1}
                             for task, (validation, test) in found.items()}}

    comparisons = [entry(2e-3, per_task)] + ([entry("tuned", tuned)] if tuned else [])
    path.write_text(json.dumps({"studies": [], "method_comparisons": comparisons}))
    return path


def _same(scores):
    return scores, scores


def test_auto_picks_the_method_that_won_more_suite_tasks(tmp_path):
    from ntk_advisor.advice.method_choice import choose_method

    path = _comparisons(tmp_path / "e.json", {"a": _same({"rocoft": 0.80, "lora": 0.85}),
                                              "b": _same({"rocoft": 0.70, "lora": 0.71}),
                                              "c": _same({"rocoft": 0.90, "lora": 0.60})})
    method, why = choose_method(21_506, path)
    assert method == "lora"  # two wins of three, although its mean difference is negative
    assert why["points_lora_minus_rocoft"] == {"a": 5.0, "b": 1.0, "c": -30.0}
    assert "won 2, lost 1 and tied 0 of 3 suite tasks against RoCoFT's on the validation split" in why["sentence"]
    assert "mean difference -8.0 points, worst task c (-30.0)" in why["sentence"]
    method, why = choose_method(30_000, _comparisons(tmp_path / "t.json", {"a": _same({"rocoft": 0.8, "lora": 0.7}),
                                                                          "b": _same({"rocoft": 0.6, "lora": 0.8})}))
    assert method == "lora" and why["basis"] == "suite"  # one win each: the larger mean difference decides
    assert "the wins tie, so the validation mean decided: +5.0 points" in why["sentence"]
    # a tie decided on validation, whatever the test mean says
    tie = {"a": ({"rocoft": 0.8, "lora": 0.7}, {"rocoft": 0.6, "lora": 0.9}),
           "b": ({"rocoft": 0.6, "lora": 0.8}, {"rocoft": 0.8, "lora": 0.7})}
    method, why = choose_method(21_506, _comparisons(tmp_path / "tie.json", tie))
    assert method == "lora" and "validation mean decided: +5.0 points" in why["sentence"]
    assert "mean difference +10.0 points" in why["sentence"]
    tie_reversed = {task: ({"rocoft": v["lora"], "lora": v["rocoft"]}, test) for task, (v, test) in tie.items()}
    method, why = choose_method(21_506, _comparisons(tmp_path / "tie2.json", tie_reversed))
    assert method == "rocoft" and "validation mean decided: +5.0 points" in why["sentence"]
    assert "mean difference -10.0 points" in why["sentence"]  # rocoft's test mean against LoRA's
    with pytest.raises(RecipeError, match="--budget must be a positive"):  # checked before the method is chosen
        RecommendConfig(method="auto", budget=0).check()


def test_auto_counts_wins_on_validation_and_reports_test(tmp_path):
    """Choosing a default on test would report a number the choice was fitted to."""
    from ntk_advisor.advice.method_choice import choose_method

    won_on_test_only = ({"rocoft": 0.80, "lora": 0.70}, {"rocoft": 0.70, "lora": 0.80})
    path = _comparisons(tmp_path / "e.json", {"a": won_on_test_only, "b": won_on_test_only})
    method, why = choose_method(21_506, path)
    assert method == "rocoft" and why["validation_points_lora_minus_rocoft"] == {"a": -10.0, "b": -10.0}
    assert "on test it won 0 and lost 2" in why["sentence"]


def test_auto_prefers_tuned_learning_rates_once_they_cover_three_tasks(tmp_path):
    from ntk_advisor.advice.method_choice import choose_method

    lora_ahead, rocoft_ahead = _same({"rocoft": 0.70, "lora": 0.80}), _same({"rocoft": 0.80, "lora": 0.70})
    shared = {t: lora_ahead for t in "abcd"}
    method, why = choose_method(21_506, _comparisons(tmp_path / "two.json", shared, tuned={"a": rocoft_ahead,
                                                                                         "b": rocoft_ahead}))
    assert method == "lora" and why["learning_rate"] == 2e-3  # two tuned tasks are too few
    method, why = choose_method(21_506, _comparisons(tmp_path / "three.json", shared,
                                                     tuned={t: rocoft_ahead for t in "abc"}))
    assert method == "rocoft" and why["learning_rate"] == "tuned"
    assert "each method at its own tuned learning rate" in why["sentence"]


def test_auto_falls_back_without_a_comparison_near_the_budget(tmp_path):
    from ntk_advisor.advice.method_choice import choose_method

    path = _comparisons(tmp_path / "e.json", {"a": _same({"rocoft": 0.8, "lora": 0.9})})
    method, why = choose_method(100_000, path)  # more than twice 21,506
    assert method == "rocoft" and why["basis"] == "fallback" and "no measured" in why["sentence"]
    assert choose_method(21_506, tmp_path / "missing.json")[0] == "rocoft"
    only_tuned = _comparisons(tmp_path / "tuned.json", {}, tuned={"a": _same({"rocoft": 0.7, "lora": 0.9})})
    method, why = choose_method(21_506, only_tuned)  # too few tuned tasks and no shared-rate comparison
    assert method == "rocoft" and why["basis"] == "fallback" and "fewer than 3 tasks" in why["sentence"]


def test_auto_writes_a_recipe_of_the_chosen_method_with_its_reason(tiny_profile_dir):
    from ntk_advisor.advice import method_choice

    chosen, why = method_choice.choose_method(400)
    recipe = recommend(tiny_profile_dir, RecommendConfig(method="auto", budget=400))
    assert recipe.method == chosen and recipe.evidence["method_choice"] == why
    named = recommend(tiny_profile_dir, RecommendConfig(method=chosen, budget=400))
    assert [t.model_dump() for t in recipe.targets] == [t.model_dump() for t in named.targets]
    with pytest.raises(RecipeError, match="--method auto chooses the method"):
        recommend(tiny_profile_dir, RecommendConfig(method="auto", allocation="uniform"))
