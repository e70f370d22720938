"""`plan`: the counts follow the profiler's own formulas and choices, without loading weights."""

from __future__ import annotations

import json

import pytest
from helpers import assert_one_line_error, run_cli

from ntk_advisor.errors import NtkAdvisorError
from ntk_advisor.inputs import models
from ntk_advisor.ntk.contractions import choose_route, route_costs
from ntk_advisor.profiling.config import ProfileConfig
from ntk_advisor.profiling.plan import data_facts, plan_profile


def test_the_skeleton_holds_no_weights(tiny_model_folder):
    import torch

    model = models.meta_classifier(str(tiny_model_folder), num_labels=3)
    assert all(p.is_meta and p.dtype == torch.float32 for p in model.parameters())
    assert next(models.meta_classifier(str(tiny_model_folder), 3, dtype=torch.bfloat16).parameters()).itemsize == 2
    assert model.get_submodule("classifier").weight.shape == (3, 16)


@pytest.mark.parametrize("head, outputs, reduction, passes", [("probe", 2, "trace", 1), ("random", 3, "trace", 3),
                                                              ("random", 2, "margin", 1)])
def test_counts_follow_the_profilers_formulas(tiny_model_folder, head, outputs, reduction, passes):
    config = ProfileConfig(model=str(tiny_model_folder), samples=8, max_length=10, head=head, reduction=reduction,
                           signal_samples=100, head_train_examples=50)
    plan = plan_profile(config, tokens=6.0, num_outputs=outputs, train_examples=80, validation_examples=10)
    assert plan.passes == passes
    import torch

    from ntk_advisor.ntk.targets import OutputSpec

    targets = models.discover_targets(models.meta_classifier(str(tiny_model_folder), outputs))
    k = OutputSpec(reduction, outputs, torch.arange(8) % outputs).target_weights().shape[0]
    contraction = sum(2 * passes * route_costs(8, 6.0, t.d_out, t.d_in, targets=k)[
        choose_route(8, 6.0, t.d_out, t.d_in, targets=k)] for t in targets)
    assert plan.flops["contractions"] == pytest.approx(contraction)
    linear = sum(t.d_in * t.d_out for t in targets)
    forward = 2 * 6.0 * linear + 4 * 36.0 * 16 * 2  # 2 layers of width 16
    assert plan.flops["kernel passes"] == pytest.approx(plan.groups * (1 + passes) * forward * 8)
    assert plan.flops["label gradient"] == pytest.approx(3 * forward * 80)  # M capped by the training split
    head_examples = (50 + 10) if head == "probe" else 0  # fit outside the probe sample, checked on validation
    assert plan.flops["probe head"] == pytest.approx(forward * head_examples)
    assert plan.memory["captures"] == pytest.approx(8 * 6.0 * sum(t.d_in + t.d_out for t in targets) * 4)
    seconds = plan.seconds(1e9)
    assert seconds["total"] == pytest.approx(sum(plan.flops.values()) / 1e9)
    assert plan.seconds(2e9)["total"] == pytest.approx(seconds["total"] / 2)


def test_a_small_capture_cap_takes_more_groups(tiny_model_folder):
    import torch

    from ntk_advisor.ntk.kernels import module_groups
    from ntk_advisor.ntk.targets import OutputSpec

    wide = plan_profile(ProfileConfig(model=str(tiny_model_folder), samples=640, max_length=10, capture_mib=512))
    narrow = plan_profile(ProfileConfig(model=str(tiny_model_folder), samples=640, max_length=10, capture_mib=1))
    model = models.meta_classifier(str(tiny_model_folder), 2)
    modules = {t.name: model.get_submodule(t.name) for t in models.discover_targets(model)}
    expected = module_groups(modules, 6400, OutputSpec("trace", 2, torch.arange(640) % 2), 2**20)
    assert wide.groups == 1 and narrow.groups == len(expected) > 5  # about 11 MiB of captures over a 1 MiB cap
    assert narrow.flops["kernel passes"] == pytest.approx(narrow.groups * wide.flops["kernel passes"])


def test_data_facts_read_the_split_and_the_token_lengths(tiny_model_folder, tiny_csv):
    facts = data_facts(ProfileConfig(model=str(tiny_model_folder), data=str(tiny_csv), max_length=4))
    assert facts["num_outputs"] == 2 and facts["train_examples"] == 192 and facts["validation_examples"] == 24
    assert facts["tokens"] == 4.0  # every toy text is longer than 4 tokens with [CLS] and [SEP]


def test_plan_cli(tiny_model_folder, tiny_csv, capsys, monkeypatch):
    code, out, err = run_cli(["plan", "--model", str(tiny_model_folder), "--data", str(tiny_csv), "--samples", "8",
                              "--max-length", "8", "--device-tflops", "10", "--json"], capsys, monkeypatch)
    assert code == 0, err
    document = json.loads(out)
    assert document["settings"]["outputs"] == 2 and document["this_machine"]["flops_per_second"] > 0
    assert document["device"]["seconds"]["total"] == pytest.approx(sum(document["flops"].values()) / 1e13)
    code, _, err = run_cli(["plan", "--model", "no/such-model-here"], capsys, monkeypatch)
    assert_one_line_error(code, err, r"no/such-model-here")
    code, _, err = run_cli(["plan", "--model", str(tiny_model_folder), "--outputs", "1"], capsys, monkeypatch)
    assert_one_line_error(code, err, r"at least 2 outputs, got 1")
    code, _, err = run_cli(["plan", "--model", str(tiny_model_folder), "--data", str(tiny_csv), "--samples", "500"],
                           capsys, monkeypatch)
    assert_one_line_error(code, err, r"--samples 500 is more than the 192 training examples")


def test_a_plan_over_processes_is_the_busiest_process(tiny_model_folder):
    from ntk_advisor.profiling.plan import plan_profile
    from ntk_advisor.profiling.profiler import ProfileConfig

    config = ProfileConfig(model=str(tiny_model_folder), samples=64, max_length=10, capture_mib=512)
    one, four = plan_profile(config), plan_profile(config, processes=4)
    assert four.flops["probe head"] == pytest.approx(one.flops["probe head"] / 4)
    assert four.flops["label gradient"] == pytest.approx(one.flops["label gradient"] / 4)
    assert four.flops["kernel passes"] == one.flops["kernel passes"]  # every process repeats the passes
    assert one.flops["contractions"] / 4 <= four.flops["contractions"] < one.flops["contractions"]
    assert four.settings["modules_per_process"] < four.settings["modules"] == one.settings["modules"]
    assert four.memory["captures"] < one.memory["captures"] and four.memory["kernels"] == one.memory["kernels"]
    with pytest.raises(NtkAdvisorError, match="--processes must be at least 1"):
        plan_profile(config, processes=0)


@pytest.mark.parametrize("folder", ["tiny_model_folder", "tiny_llama_folder"])
def test_plan_counts_the_passes_the_profiler_runs(folder, request):
    """The probe head's two passes merge into one on an encoder; a decoder's head scores every
    token, so its passes stay two. The plan must count what module_passes really does."""
    import torch

    from ntk_advisor.ntk.kernels import module_passes
    from ntk_advisor.ntk.targets import OutputSpec

    path = str(request.getfixturevalue(folder))
    plan = plan_profile(ProfileConfig(model=path, samples=4, max_length=8, head="probe"), tokens=6.0, num_outputs=2,
                        train_examples=20, validation_examples=5)
    loaded = models.load_classifier(path, num_labels=2)
    head_module = loaded.backbone.get_submodule(loaded.head_name)
    with torch.no_grad():  # a fitted binary probe's form, rows (−w/2, +w/2): rank 1, what the merge needs
        w = torch.randn(head_module.weight.shape[1])
        head_module.weight.copy_(torch.stack([-w / 2, w / 2]))
    words = ["good", "bad film", "fine plot here", "dull"]
    batch = models.encode(loaded.tokenizer, words, 8)
    head = models.wrapped_name(loaded.head_name)
    info: dict = {}
    list(module_passes(loaded.logits_model, batch, {head: head_module},
                       OutputSpec("trace", 2, torch.tensor([0, 1, 0, 1])), merge_head_passes=True, info=info))
    assert info["passes"] == plan.passes == (1 if folder == "tiny_model_folder" else 2)
