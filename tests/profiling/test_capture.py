"""recommend's capture holds one group of modules at a time under a cap, and gives the same
advice and the same kernels as holding every module at once."""

from __future__ import annotations

import pytest
import torch

from ntk_advisor.advice import recommend as recommend_module
from ntk_advisor.advice.recommend import RecommendConfig, recommend
from ntk_advisor.profiling import capture as capture_module
from ntk_advisor.profiling.folder import load_profile

ONE_MODULE_A_GROUP = 1e-6  # MiB: every module alone exceeds it, so each is a group of its own


def _recommend_with_cap(monkeypatch, profile_dir, config, cap_mib):
    made = []

    def capped(profile, capture_mib=0):
        made.append(capture_module.capture(profile, capture_mib=cap_mib))
        return made[-1]

    monkeypatch.setattr(recommend_module, "capture", capped)
    return recommend(profile_dir, config), made[0]


@pytest.mark.parametrize("config", [RecommendConfig(method="rocoft", budget=400),
                                    RecommendConfig(method="rocoft", budget=400, allocation="uniform"),
                                    RecommendConfig(method="rocoft", budget=400, objective="lambda_min"),
                                    RecommendConfig(method="rocoft", budget=400, axis="cols"),
                                    RecommendConfig(method="rocoft", budget=400, placement="wanda-max"),
                                    RecommendConfig(method="lora", budget=400, placement="grad-norm")],
                         ids=["greedy", "uniform", "lambda_min", "cols", "wanda", "grad-norm"])
def test_grouped_captures_give_the_same_recipe(monkeypatch, tiny_profile_dir, config):
    whole, one_group = _recommend_with_cap(monkeypatch, tiny_profile_dir, config, cap_mib=1024)
    grouped, many = _recommend_with_cap(monkeypatch, tiny_profile_dir, config, cap_mib=ONE_MODULE_A_GROUP)
    assert len(one_group.passes.groups) == 1 < len(many.passes.groups) == len(many.targets)
    assert [(t.module, t.indices, t.rank) for t in grouped.targets] == [(t.module, t.indices, t.rank)
                                                                       for t in whole.targets]
    for key in ("trace", "lambda_min", "condition_number", "alignment", "loo_accuracy", "distance_to_full"):
        assert grouped.evidence["predicted"][key] == pytest.approx(whole.evidence["predicted"][key], rel=1e-9, abs=1e-12)
        for name, report in whole.evidence["baselines_same_budget"].items():
            assert grouped.evidence["baselines_same_budget"][name][key] == pytest.approx(report[key], rel=1e-9,
                                                                                       abs=1e-12)


def test_the_capture_cap_of_recommend_config_groups_the_captures(monkeypatch, tiny_profile_dir):
    """`recommend --capture-mib` reaches the capture: a cap below one module's captures holds them
    a module at a time, and the recipe is the one of the default cap."""
    made = []

    def spied(profile, capture_mib=0):
        made.append(capture_module.capture(profile, capture_mib))
        return made[-1]

    monkeypatch.setattr(recommend_module, "capture", spied)
    whole = recommend(tiny_profile_dir, RecommendConfig(budget=400))
    grouped = recommend(tiny_profile_dir, RecommendConfig(budget=400, capture_mib=ONE_MODULE_A_GROUP))
    assert len(made[0].passes.groups) == 1 < len(made[1].passes.groups) == len(made[1].targets)
    assert [(t.module, t.indices) for t in grouped.targets] == [(t.module, t.indices) for t in whole.targets]


def test_passes_a_few_examples_at_a_time_capture_the_same_x_and_delta(monkeypatch, tiny_profile_dir):
    """Held a group at a time, the passes run PASS_EXAMPLES examples at a time to bound the
    forward graph: each example's x and δ must not change (examples never interact)."""
    whole = capture_module.capture(load_profile(tiny_profile_dir), capture_mib=1024)
    monkeypatch.setattr(capture_module, "PASS_EXAMPLES", 4)  # 6 probe examples: chunks of 4 and 2
    sizes = []
    real = capture_module.module_passes
    monkeypatch.setattr(capture_module, "module_passes",
                        lambda model, batch, *a, **k: sizes.append(len(batch["input_ids"])) or real(model, batch, *a, **k))
    chunked = capture_module.capture(load_profile(tiny_profile_dir), capture_mib=ONE_MODULE_A_GROUP)
    chunked.x[next(iter(chunked.targets))]
    assert sizes == [4, 2]
    torch.testing.assert_close(chunked.logits, whole.logits, rtol=1e-12, atol=1e-14)
    for name in whole.targets:
        torch.testing.assert_close(chunked.x[name], whole.x[name], rtol=1e-12, atol=1e-14)
        assert len(chunked.deltas[name]) == len(whole.deltas[name]) == whole.spec.num_passes
        for mine, theirs in zip(chunked.deltas[name], whole.deltas[name]):
            torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-14)


def test_default_advice_sweeps_the_groups_at_most_twice(monkeypatch, tiny_profile_dir):
    """The search's sweep keeps its candidates' kernels, so the advised placement costs no more
    passes; only first-k's reference rows may need a second sweep."""
    _, captured = _recommend_with_cap(monkeypatch, tiny_profile_dir, RecommendConfig(budget=400), ONE_MODULE_A_GROUP)
    groups = len(captured.passes.groups)
    assert groups <= captured.passes.group_passes <= 2 * groups


def test_only_one_group_is_held_at_a_time(tiny_profile_dir):
    captured = capture_module.capture(load_profile(tiny_profile_dir), capture_mib=ONE_MODULE_A_GROUP)
    names = list(captured.targets)
    for name in names:
        x = captured.x[name]
        assert set(captured.passes.x) == {name} and x.shape[-1] == captured.targets[name].d_in
    assert captured.passes.group_passes == len(names)
    captured.x[names[-1]]
    assert captured.passes.group_passes == len(names)  # the loaded group is read, not recaptured


def test_a_slice_kernel_is_the_sum_of_its_rows_kernels(tiny_profile_dir):
    captured = capture_module.capture(load_profile(tiny_profile_dir), capture_mib=ONE_MODULE_A_GROUP)
    first, second = list(captured.targets)[:2]
    direct = captured.slice_kernel(first, "rows", (0, 2, 3))
    singles = [captured.slice_kernel(first, "rows", (i,)) for i in (0, 2, 3)]
    fresh = capture_module.capture(load_profile(tiny_profile_dir), capture_mib=ONE_MODULE_A_GROUP)
    fresh.passes.kernels.update({k: v for k, v in captured.passes.kernels.items() if len(k[2]) == 1})
    fresh.x[second]  # another group is loaded: the kept single-row kernels must serve the request
    before = fresh.passes.group_passes
    summed = fresh.slice_kernel(first, "rows", (0, 2, 3))
    assert fresh.passes.group_passes == before  # no recapture
    torch.testing.assert_close(summed, direct, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(sum(singles), direct, rtol=1e-12, atol=1e-14)


def test_passes_count_as_ran_only_when_every_module_is_held(tiny_profile_dir):
    """recommend computes another method's reference placement only when the captures are free to
    read again: held a group at a time, reading another group is a whole new sweep."""
    for cap, held_whole in ((1024, True), (ONE_MODULE_A_GROUP, False)):
        captured = capture_module.capture(load_profile(tiny_profile_dir), capture_mib=cap)
        assert not captured.passes_ran
        captured.x[next(iter(captured.targets))]
        assert captured.passes_ran is held_whole


def test_advise_gives_its_capture_cap_to_the_profile_and_to_the_search(tiny_model_folder, tiny_csv, tmp_path, capsys,
                                                                       monkeypatch):
    """`advise --capture-mib` bounds both stages: the profile's passes (whole MiB, rounded up)
    and the search's capture; a bad cap is refused before any work."""
    from helpers import assert_one_line_error, run_cli

    from ntk_advisor.profiling import profiler

    caps = {}
    real_profile = profiler.profile

    def spied_profile(config, **kwargs):
        caps["profile"] = config.capture_mib
        return real_profile(config, **kwargs)

    def spied_capture(profile, capture_mib=0):
        caps["search"] = capture_mib
        return capture_module.capture(profile, capture_mib)

    monkeypatch.setattr(profiler, "profile", spied_profile)
    monkeypatch.setattr(recommend_module, "capture", spied_capture)
    args = ["advise", "--model", str(tiny_model_folder), "--data", str(tiny_csv), "--samples", "8", "--max-length",
            "8", "--budget", "200", "--out", str(tmp_path / "r.yaml")]
    code, _, err = run_cli(args + ["--capture-mib", "2.5"], capsys, monkeypatch)
    assert code == 0, err
    assert caps == {"profile": 3, "search": 2.5}
    code, _, err = run_cli(args + ["--capture-mib", "-1", "--force"], capsys, monkeypatch)
    assert_one_line_error(code, err, r"--capture-mib must be 0 \(from the free memory\) or more")
