"""validate and report for supervised fine-tuning (tiny random Llama: mechanics only). An SFT
study ranks placements by test completion NLL, lower first; its predictors are those defined
without labels; its baselines train at PEFT's α = r while the advised arm keeps recommend's
rsLoRA; and report renders SFT studies, runs and profiles."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from ntk_advisor.study.config import ValidateConfig
from ntk_advisor.study.validate import ValidateError, validate

PAIRS = [("Review : good film", " positive"), ("Review : the plot was very dull and not fun", " negative"),
         ("Text : a", " great movie so fun"), ("Review : awful", " negative"), ("Text : fine", " fine film")]
ARMS = ("advised", "lora-qv", "lora-all", "lora-mlp")


def sft_config(model, data, **overrides) -> ValidateConfig:
    """The settings the CLI test below passes as flags (the rest are the CLI's defaults)."""
    settings = dict(model=str(model), data=str(data), task="sft", method="lora", budget=600, arms=ARMS,
                    key_placements=(), seeds=1, steps=2, batch_size=8, samples=6, max_length=16)
    return ValidateConfig(**(settings | overrides))


@pytest.fixture(scope="module")
def sft_study(tiny_llama_folder, tmp_path_factory):
    root = tmp_path_factory.mktemp("sft-study")
    data = root / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in PAIRS * 8))
    out = root / "study"
    return validate(sft_config(tiny_llama_folder, data), out, device="cpu"), out, data


def test_an_sft_study_ranks_by_test_nll_with_the_predictors_defined_without_labels(sft_study):
    document, out, _ = sft_study
    assert document["primary"] == "test_nll"
    placements = document["placements"]
    assert set(placements) | set(document["duplicates"]) == set(ARMS)
    nll = {n: placements[n]["common_seeds"]["test_nll"]["mean"] for n in placements}
    assert all(math.isfinite(v) and v > 0 for v in nll.values())
    assert document["ranking"] == sorted(placements, key=nll.get)  # lowest NLL first
    metrics = json.loads((out / "runs" / "advised" / "seed-0" / "metrics.json").read_text())
    assert placements["advised"]["test_nll"]["mean"] == metrics["test"]["nll"]
    table = document["correlations"]["test_nll"]
    assert {"first_step", "label_signal", "objective:trace", "objective:lambda_min"} <= set(table)
    assert not {"objective:alignment", "objective:loo", "loo_accuracy"} & set(table)  # no labels, no such figures
    assert all("test_accuracy" not in run for p in placements.values() for run in p["runs"].values())


def test_the_first_step_predictor_is_one_k_one_over_n_squared_of_the_placements_kernel(sft_study):
    """1ᵀK_S1/N² at the scale each arm trains at, recomputed from the profile; and
    0 ≤ 1ᵀK1/N² ≤ λ_max/N ≤ tr K/N for any PSD K."""
    from ntk_advisor.advice.recommend import placement_kernel
    from ntk_advisor.methods import part_from_json
    from ntk_advisor.profiling.capture import capture
    from ntk_advisor.profiling.folder import load_profile
    from ntk_advisor.recipe.io import load_recipe

    _, out, _ = sft_study
    plan = json.loads((out / "plan.json").read_text())
    captured = capture(load_profile(out / "profile"))
    for name, entry in plan["placements"].items():
        recipe = load_recipe(out / "runs" / name / "seed-0" / "recipe.yaml")
        placement = {m: part_from_json(p) for m, p in entry["placement"].items()}
        kernel = placement_kernel(captured, placement, "lora", recipe.training)
        n = kernel.shape[0]
        predicted = entry["predicted"]
        assert predicted["first_step"] == pytest.approx(float(kernel.sum()) / n ** 2, rel=1e-9), name
        assert 0 <= predicted["first_step"] <= predicted["lambda_max"] / n * (1 + 1e-9)
        assert predicted["lambda_max"] <= predicted["trace"] * (1 + 1e-9)


def test_baselines_train_at_alpha_r_and_the_advised_arm_as_recommend_writes_it(sft_study):
    _, out, _ = sft_study
    scale = {}
    for name in ARMS:
        recipe = out / "runs" / name / "seed-0" / "recipe.yaml"
        if recipe.exists():
            scale[name] = yaml.safe_load(recipe.read_text())["training"]["use_rslora"]
    assert scale.pop("advised") is True  # what `recommend` writes for SFT (docs/sft.md)
    assert scale and not any(scale.values())  # lora-qv, lora-all, lora-mlp: PEFT's defaults


def test_sft_study_settings_that_cannot_apply_are_one_line_errors(tiny_llama_folder, tmp_path):
    data = tmp_path / "pairs.jsonl"
    with pytest.raises(ValidateError, match="--task sft has no labels for: drop --lambdas"):
        sft_config(tiny_llama_folder, data, lambdas=(0.0, 1.0)).check()
    with pytest.raises(ValidateError, match="arm 'advised-alignment' ranks by labels"):
        sft_config(tiny_llama_folder, data, arms=("advised", "advised-alignment", "lora-all")).check()
    with pytest.raises(ValidateError, match="unknown --task 'chat'"):
        sft_config(tiny_llama_folder, data, task="chat").check()


def test_summary_of_synthetic_sft_runs_ranks_lowest_nll_first_and_prefers_negative_rho():
    from ntk_advisor.study.summary import best_predictor, summarize

    nll = {"a": [2.0, 2.4], "b": [2.2], "c": [2.5], "d": [2.9]}
    plan = {"budget": 100, "head": 0, "duplicates": {}, "placements": {
        name: {"method": "lora", "kind": "advised" if name == "a" else "baseline", "objective": None,
               "placement": {}, "scores": {},
               "predicted": {"weights": 90, "first_step": step, "label_signal": -step, "effective_rank": 3.0,
                             "distance_to_full": 0.1, "objectives": {"lambda_min": 1.0, "condition": -step,
                                                                     "trace": step}}}
        for step, name in zip([4.0, 3.0, 2.0, 1.0], nll)}}
    results = {f"runs/{name}/seed-{s}": {"test": {"nll": v}, "validation_best": {"nll": v + 0.1},
                                         "loss_curve": [3.0, 2.0]}
               for name, values in nll.items() for s, v in enumerate(values)}
    document = summarize(ValidateConfig(task="sft", resamples=100), plan, results, None)
    assert document["ranking"] == ["a", "b", "c", "d"]  # on the shared seed-0: 2.0 < 2.2 < 2.5 < 2.9
    table = document["correlations"]["test_nll"]
    assert table["first_step"]["spearman"] == pytest.approx(-1.0)  # more predicted progress, lower NLL
    assert table["label_signal"]["spearman"] == pytest.approx(1.0)
    assert best_predictor(document)[1] == pytest.approx(-1.0)  # the useful sign for NLL is negative
    b = document["paired"]
    assert b == {}  # only one shared seed per pair: nothing paired over two or more
    assert document["placements"]["a"]["test_nll"]["mean"] == pytest.approx(2.2)


def test_validate_sft_from_the_shell_resumes_and_prints_the_nll_tables(sft_study, tiny_llama_folder, capsys,
                                                                     monkeypatch):
    from tests.helpers import run_cli

    document, out, data = sft_study
    stamp = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/metrics.json")}
    code, printed, err = run_cli(["validate", "--out", str(out), "--model", str(tiny_llama_folder), "--data", str(data),
                                  "--task", "sft", "--method", "lora", "--budget", "600", "--arms", ",".join(ARMS),
                                  "--key", "", "--seeds", "1", "--steps", "2", "--batch-size", "8", "--samples", "6",
                                  "--max-length", "16", "--device", "cpu"], capsys, monkeypatch)
    assert code == 0, err
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/metrics.json")} == stamp  # resumed, nothing rerun
    words = " ".join(printed.split())  # rich wraps long titles
    assert "ranked by test completion NLL" in words and "(yes: ρ < 0, the other sign for distance_to_full)" in words
    assert "first_step" in printed and "alignment" not in printed


@pytest.mark.parametrize("relative, kind, titles", [
    (".", "validate", ["Predicted vs measured: first_step", "Every predictor", "Loss curves"]),
    ("runs/advised/seed-0", "run", ["Loss curve", "Placement"]),
    ("profile", "profile", ["share of the SFT gradient", "Row and column scores"]),
])
def test_report_renders_sft_studies_runs_and_profiles(sft_study, tmp_path, relative, kind, titles):
    from ntk_advisor.study.report import write_report

    _, out, _ = sft_study
    written = write_report(out / relative, tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    assert written["kind"] == kind and written["figures"] >= 2
    assert all(title in page for title in titles)
    assert "accuracy" not in page and "alignment" not in page  # nothing reads as a classifier's figure


def test_the_useful_sign_of_each_predictor_follows_the_measure_and_the_predictor():
    """Accuracy wants ρ > 0, NLL ρ < 0; distance_to_full (less is better) the other way round in
    both, so a close-to-full placement with low NLL counts for distance_to_full, not against it."""
    from ntk_advisor.study.summary import CLASSIFY, SFT, best_predictor

    assert (CLASSIFY.useful_sign("objective:trace"), CLASSIFY.useful_sign("distance_to_full")) == (1, -1)
    assert (SFT.useful_sign("first_step"), SFT.useful_sign("distance_to_full")) == (-1, 1)

    def document(primary, rhos):
        return {"primary": primary, "correlations": {primary: {p: {"spearman": r} for p, r in rhos.items()}}}

    rhos = {"first_step": 0.3, "distance_to_full": 0.9, "label_signal": -0.5}
    assert best_predictor(document("test_nll", rhos)) == ("distance_to_full", 0.9)
    assert best_predictor(document("test_accuracy", rhos)) == ("first_step", 0.3)
