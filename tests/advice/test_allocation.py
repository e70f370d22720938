"""The allocation rules on a tiny profile with planted label-gradient scores: where each rule
puts the rows, and the lora-mlp baseline."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_batch, tiny_classifier

from ntk_advisor.advice.recommend import RecommendConfig, recommend
from ntk_advisor.inputs.models import discover_targets
from ntk_advisor.profiling.folder import save_profile
from ntk_advisor.profiling.profiler import ProfileConfig, profile_model

LABELS = torch.tensor([0, 1, 0, 1, 1, 0])
HEAD = 2 * 16 + 2


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Module A's rows score 100, 90, 80, ... (a strong module); every other module's rows
    score 1, 1/2, 1/3, ...: the signal rule must pile rows into A, uniform must not."""
    root = tmp_path_factory.mktemp("planted")
    loaded = tiny_classifier("bert")
    loaded.backbone.save_pretrained(root / "model")
    config = ProfileConfig(model=str(root / "model"), data="tiny", samples=6, max_length=7, dtype="float64")
    result = profile_model(loaded, tiny_batch(), LABELS, config, lambda *a: None)
    blocks = [t for t in discover_targets(loaded.backbone) if t.layer is not None]
    signal = {t.name: 1.0 / torch.arange(1, t.d_out + 1, dtype=torch.float64) for t in blocks}
    strong = blocks[0].name
    signal[strong] = torch.linspace(100, 100 - 10 * (blocks[0].d_out - 1), blocks[0].d_out, dtype=torch.float64).clamp_min(0.5)
    order = torch.randperm(blocks[0].d_out, generator=torch.Generator().manual_seed(0))
    signal = {n: v[order] if v.shape == order.shape else v for n, v in signal.items()}  # best rows not first
    result.scores["rows_signal"] = signal
    return save_profile(result, root / "profile"), blocks, signal


def rows_of(recipe):
    return {t.module: t.indices for t in recipe.targets}


def test_signal_rule_covers_every_module_then_follows_diminishing_scores(planted):
    folder, blocks, signal = planted
    per_round = sum(t.d_in for t in blocks)
    recipe = recommend(folder, RecommendConfig(budget=HEAD + 3 * per_round, allocation="signal"))
    rows = rows_of(recipe)
    assert set(rows) == {t.name for t in blocks}  # coverage first
    assert recipe.evidence["trainable"]["weights"] <= 3 * per_round
    for name, indices in rows.items():  # each module's rows are its best-scored ones
        best = torch.argsort(signal[name], descending=True)[: len(indices)].tolist()
        assert sorted(indices) == sorted(best)
    strong = blocks[0].name
    assert len(rows[strong]) > 3 and all(len(v) <= 3 for n, v in rows.items() if n != strong)
    # diminishing returns, not a pile: the strong module's rows go in score order, and a weak
    # module's second row (score 1/2) loses to every strong row worth more per weight
    taken = sorted(float(signal[strong][i]) for i in rows[strong])
    assert taken == sorted(float(x) for x in torch.sort(signal[strong], descending=True).values[:len(taken)])


def test_uniform_rule_keeps_even_counts_with_the_best_rows(planted):
    folder, blocks, signal = planted
    per_round = sum(t.d_in for t in blocks)
    recipe = recommend(folder, RecommendConfig(budget=HEAD + 3 * per_round, allocation="uniform"))
    rows = rows_of(recipe)
    assert {len(v) for v in rows.values()} == {3}
    strong = blocks[0].name
    assert sorted(rows[strong]) == sorted(torch.argsort(signal[strong], descending=True)[:3].tolist())
    certainty = recipe.evidence["uncertainty"]
    assert certainty["safe_allocation"] is True and "safe allocation" in certainty["sentence"]
    signal_recipe = recommend(folder, RecommendConfig(budget=HEAD + 3 * per_round, allocation="signal"))
    assert signal_recipe.evidence["uncertainty"]["safe_allocation"] is False


def test_signal_rule_at_one_row_per_module_equals_the_coverage_round(planted):
    folder, blocks, _ = planted
    budget = HEAD + sum(t.d_in for t in blocks)
    by_signal = rows_of(recommend(folder, RecommendConfig(budget=budget, allocation="signal")))
    by_uniform = rows_of(recommend(folder, RecommendConfig(budget=budget, allocation="uniform")))
    assert by_signal == by_uniform and {len(v) for v in by_signal.values()} == {1}


def test_lora_mlp_puts_rank_on_the_ffn_modules_only(planted):
    folder, blocks, _ = planted
    recipe = recommend(folder, RecommendConfig(method="lora", placement="lora-mlp", budget=HEAD + 4 * 48 * 2))
    roles = {t.name: t.role for t in blocks}
    assert recipe.targets and {roles[t.module] for t in recipe.targets} == {"ffn-in", "ffn-out"}
    ranks = [t.rank for t in recipe.targets]
    assert max(ranks) - min(ranks) <= 1 and len(ranks) == 4  # one rank everywhere (+1 from the remainder)
    assert recipe.evidence["trainable"]["total"] <= HEAD + 4 * 48 * 2


@pytest.mark.parametrize("method", ["lora", "rocoft"])
def test_peft_section_trains_what_the_recipe_trains(planted, method):
    """get_peft_model(model, LoraConfig(**recipe.peft)) trains the head too (modules_to_save):
    for LoRA exactly the recipe's parameters, names and count; for RoCoFT the nearest LoRA
    plus the same head."""
    from peft import LoraConfig, get_peft_model

    folder, blocks, _ = planted
    recipe = recommend(folder, RecommendConfig(method=method, budget=HEAD + sum(t.d_in + t.d_out for t in blocks)))
    assert recipe.peft["modules_to_save"] == ["classifier"]
    model = get_peft_model(tiny_classifier("bert").backbone, LoraConfig(**recipe.peft))
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    head = {n: k for n, k in trainable.items() if ".modules_to_save." in n}
    assert sum(head.values()) == recipe.evidence["trainable"]["head"] == HEAD
    lora = {n: k for n, k in trainable.items() if "lora_" in n}
    assert set(trainable) == set(head) | set(lora)
    adapted = {n.split(".lora_")[0].removeprefix("base_model.model.") for n in lora}
    assert adapted == {t.module for t in recipe.targets}
    if method == "lora":
        assert sum(lora.values()) == recipe.evidence["trainable"]["weights"]
    no_head = recommend(folder, RecommendConfig(method=method, budget=HEAD + 400, train_head=False))
    assert "modules_to_save" not in no_head.peft


def test_lora_signal_allocation_covers_the_best_first_then_steps_from_the_second_singular_value():
    """lora_by_spectrum(coverage=True) on three 16×16 modules (32 weights a rank), the largest
    σ_1² on the last one: a budget of one rank covers that one (best σ_1² per weight, not model
    order); three ranks and one step of two cover all, and the step goes to m2 for σ_2² + σ_3²
    = 9 + 1 against m0's 1 + 0, so m2 holds 9 + 9 + 1 = 19 (a step from σ_1 would hold 18)."""
    from types import SimpleNamespace

    from ntk_advisor.advice.signal_rules import lora_by_spectrum
    from ntk_advisor.errors import RecipeError

    def spectrum(*values):
        return torch.tensor(list(values) + [0.0] * (16 - len(values)), dtype=torch.float64)

    targets = {name: SimpleNamespace(d_in=16, d_out=16) for name in ("m0", "m1", "m2")}
    captured = SimpleNamespace(targets=targets, profile=SimpleNamespace(scores={"signal_spectrum": {
        "m0": spectrum(1.0, 1.0), "m1": spectrum(2.0), "m2": spectrum(9.0, 9.0, 1.0, 1.0)}}))
    config = SimpleNamespace(module_rank=8, budget=0)
    ranks, scores, stats = lora_by_spectrum(captured, config, 32, step=2, coverage=True)
    assert (ranks, scores) == ({"m2": 1}, {"m2": 9.0})
    assert stats["candidate_items"] == 3 + 7 and stats["steps"] == 1  # m2's seven steps from σ_2 on, three ones
    ranks, scores, stats = lora_by_spectrum(captured, config, 3 * 32 + 64, step=2, coverage=True)
    assert ranks == {"m2": 3, "m0": 1, "m1": 1}
    assert scores["m2"] == pytest.approx(19.0) and stats["steps"] == 4
    with pytest.raises(RecipeError, match="buys no rank 1 of any module"):
        lora_by_spectrum(captured, config, 31, step=2, coverage=True)
