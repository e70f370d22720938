"""--modules: the advised search restricted to one module group (settings.ModuleGroup)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from conftest import tiny_batch, tiny_classifier
from helpers import assert_one_line_error, run_cli

from ntk_advisor.advice.config import advised_rule, resolve_allocation
from ntk_advisor.advice.recommend import RecommendConfig, recommend, within_group
from ntk_advisor.errors import RecipeError
from ntk_advisor.inputs.models import discover_targets
from ntk_advisor.profiling.capture import capture
from ntk_advisor.profiling.folder import load_profile, save_profile
from ntk_advisor.profiling.profiler import ProfileConfig, profile_model
from ntk_advisor.recipe.io import load_recipe
from ntk_advisor.settings import ModuleGroup

LABELS = torch.tensor([0, 1, 0, 1, 1, 0])
FFN, ATTENTION = ModuleGroup.roles("ffn"), ModuleGroup.roles("attention")


def roles_of() -> dict[str, str]:
    return {t.name: t.role for t in discover_targets(tiny_classifier("bert").backbone)}


@pytest.mark.parametrize("method", ["rocoft", "lora"])
@pytest.mark.parametrize("group,roles", [("ffn", FFN), ("attention", ATTENTION)])
def test_the_advice_stays_in_its_group_and_the_references_do_not(tiny_profile_dir, method, group, roles):
    recipe = recommend(tiny_profile_dir, RecommendConfig(method=method, budget=900, module_rank=2, modules=group))
    role = roles_of()
    assert recipe.targets and {role[t.module] for t in recipe.targets} <= roles
    assert recipe.evidence["trainable"]["total"] <= 900 and recipe.evidence["modules"] == group
    if method == "rocoft":  # the coverage round seeds every module of the group, and only those
        assert {t.module for t in recipe.targets} == {n for n, r in role.items() if r in roles}
    # the same-budget references are the method defaults on every module, not on the group
    whole = recommend(tiny_profile_dir, RecommendConfig(method=method, budget=900, module_rank=2))
    assert recipe.evidence["baselines_same_budget"] == whole.evidence["baselines_same_budget"]


def test_ffn_ranks_equal_the_whole_search_on_a_profile_whose_other_modules_carry_no_signal(tmp_path):
    """Restricting to the FFN modules is the same search as giving every other module zero
    label signal: the ranks and their order must agree."""
    loaded = tiny_classifier("bert")
    loaded.backbone.save_pretrained(tmp_path / "model")
    config = ProfileConfig(model=str(tmp_path / "model"), data="tiny", samples=6, max_length=7, dtype="float64")
    result = profile_model(loaded, tiny_batch(), LABELS, config, lambda *a: None)
    restricted = save_profile(result, tmp_path / "as-profiled")
    blocks = {t.name: t for t in discover_targets(loaded.backbone) if t.layer is not None}
    generator = torch.Generator().manual_seed(0)
    spectra, rows = result.scores.setdefault("signal_spectrum", {}), result.scores.setdefault("rows_signal", {})
    for name, t in blocks.items():  # distinct, decreasing spectra so that the greedy has no ties
        values = torch.rand(min(t.d_in, t.d_out), generator=generator, dtype=torch.float64).sort(descending=True).values
        values = values if t.role in FFN else torch.zeros_like(values)
        spectra[name] = values
        rows[name] = torch.cat([values, values.new_zeros(t.d_out - len(values))])
    silenced = save_profile(result, tmp_path / "silenced")
    budget = 2 * 16 + 2 + 6 * 2 * 40  # the head and six rank-2 steps: fewer than the FFN spectra hold
    kept = recommend(silenced, RecommendConfig(method="lora", budget=budget, modules="ffn"))
    whole = recommend(silenced, RecommendConfig(method="lora", budget=budget))
    assert {t.module: t.rank for t in kept.targets} == {t.module: t.rank for t in whole.targets}
    assert all(blocks[t.module].role in FFN for t in whole.targets)
    # on the unmodified profile the group changes the advice, so the test above is not vacuous
    mixed = recommend(restricted, RecommendConfig(method="lora", budget=budget))
    assert {blocks[t.module].role for t in mixed.targets} - FFN


def test_bad_groups_are_refused_with_what_to_do(tiny_profile_dir):
    with pytest.raises(RecipeError, match="unknown --modules 'mlp': use one of all, attention, ffn"):
        recommend(tiny_profile_dir, RecommendConfig(modules="mlp"))
    with pytest.raises(RecipeError, match="--placement lora-qv is a baseline with its own modules"):
        recommend(tiny_profile_dir, RecommendConfig(method="lora", placement="lora-qv", modules="ffn"))
    with pytest.raises(RecipeError, match="--method auto chooses the method"):
        recommend(tiny_profile_dir, RecommendConfig(method="auto", modules="ffn"))
    captured = capture(load_profile(tiny_profile_dir))
    attention_only = replace(captured, targets={n: t for n, t in captured.targets.items() if t.role in ATTENTION})
    with pytest.raises(RecipeError, match="--modules ffn matches none of this model's modules"):
        within_group(attention_only, "ffn")


def test_a_group_recipe_quotes_its_own_rule_and_the_cli_takes_the_option(tiny_profile_dir, tmp_path, capsys,
                                                                         monkeypatch):
    assert advised_rule(resolve_allocation(RecommendConfig(method="lora", modules="ffn"))) == "advised-greedy-ffn"
    assert advised_rule(resolve_allocation(RecommendConfig(method="lora", rank_step=1, modules="ffn"))) == \
        "advised-step1-ffn"
    assert advised_rule(resolve_allocation(RecommendConfig(method="lora"))) == "advised-greedy"
    recipe = recommend(tiny_profile_dir, RecommendConfig(method="lora", budget=900, module_rank=2, modules="ffn"))
    assert recipe.evidence["uncertainty"]["rule"] == "advised-greedy-ffn"
    code, _, err = run_cli(["recommend", str(tiny_profile_dir), "--method", "lora", "--budget", "900",
                            "--modules", "attention", "--out", str(tmp_path / "r.yaml")], capsys, monkeypatch)
    assert code == 0, err
    assert {roles_of()[t.module] for t in load_recipe(tmp_path / "r.yaml").targets} <= ATTENTION
    code, _, err = run_cli(["recommend", str(tiny_profile_dir), "--modules", "heads", "--out",
                            str(tmp_path / "bad.yaml")], capsys, monkeypatch)
    assert_one_line_error(code, err, r"unknown --modules 'heads': use one of all, attention, ffn")
    assert not (tmp_path / "bad.yaml").exists()
