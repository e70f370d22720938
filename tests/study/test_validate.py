"""validate: plan, runs, resume, correlations, the λ sweep and its linear model (tiny BERT)."""

import json
import math

import numpy as np
import pytest
import torch
from helpers import tiny_config

from ntk_advisor.methods import Slices
from ntk_advisor.study.correlate import rank_correlation
from ntk_advisor.study.validate import ValidateConfig, ValidateError, validate


def test_study_runs_every_placement_and_resumes(tiny_model_folder, tiny_csv, tmp_path):
    out = tmp_path / "study"
    config = tiny_config(tiny_model_folder, tiny_csv)
    document = validate(config, out)
    names = list(document["placements"])
    assert len(names) == 4 and names[0] == "advised"
    assert document["placements"]["advised"]["test_accuracy"]["n"] == 2  # a key placement: 2 seeds
    assert all(document["placements"][n]["test_accuracy"]["n"] == 1 for n in names if n not in ("advised", "first-k"))
    weights = {document["placements"][n]["weights"] for n in names}
    assert max(weights) <= document["budget"]
    table = document["correlations"]["test_accuracy"]
    assert set(table) >= {"objective:alignment", "loo_accuracy"}
    assert sorted(document["ranking"], key=lambda n: -document["placements"][n]["test_accuracy"]["mean"]) == \
        document["ranking"]
    # Resume: finished runs are read back, not redone (their files are untouched).
    stamp = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/metrics.json")}
    assert len(stamp) == sum(document["placements"][n]["test_accuracy"]["n"] for n in names) >= 5
    again = validate(config, out)
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/metrics.json")} == stamp
    assert again["placements"]["advised"]["test_accuracy"] == document["placements"]["advised"]["test_accuracy"]
    assert json.loads((out / "validate.json").read_text())["ranking"] == document["ranking"]


def test_other_settings_in_the_same_folder_are_refused(tiny_model_folder, tiny_csv, tmp_path):
    out = tmp_path / "study"
    (out).mkdir()
    (out / "settings.json").write_text(json.dumps({"budget": 1}))
    with pytest.raises(ValidateError, match="other settings"):
        validate(tiny_config(tiny_model_folder, tiny_csv), out)


def test_a_study_from_before_a_setting_existed_resumes(tmp_path):
    from dataclasses import asdict

    from ntk_advisor.study.validate import _check_settings

    config = ValidateConfig()
    older = {k: v for k, v in json.loads(json.dumps(asdict(config))).items() if k != "arms"}
    (tmp_path / "settings.json").write_text(json.dumps(older))
    _check_settings(tmp_path, config, force=False)  # the missing key had its default: same study
    with pytest.raises(ValidateError, match="other settings \\(arms\\)"):
        _check_settings(tmp_path, ValidateConfig(arms=("advised", "first-k", "random")), force=False)


def test_more_placements_than_fit_the_budget_is_a_clear_error(tiny_model_folder, tiny_csv, tmp_path):
    # A budget of the head plus one row: only a handful of distinct placements exist.
    with pytest.raises(ValidateError, match="distinct placements"):
        validate(tiny_config(tiny_model_folder, tiny_csv, budget=34 + 16, placements=40), tmp_path / "s")


def test_rank_correlation_known_values_and_interval():
    x = np.arange(10.0)
    perfect = rank_correlation(x, 2 * x + 1, resamples=300)
    assert perfect["spearman"] == pytest.approx(1.0) and perfect["kendall"] == pytest.approx(1.0)
    assert perfect["spearman_ci"][0] == pytest.approx(1.0)
    reverse = rank_correlation(x, -x, resamples=300)
    assert reverse["spearman"] == pytest.approx(-1.0)
    noisy = rank_correlation(x, np.random.default_rng(0).permutation(10), resamples=500)
    lo, hi = noisy["spearman_ci"]
    assert lo <= noisy["spearman"] <= hi and hi - lo > 0.3  # 10 noisy pairs leave a wide interval
    assert math.isnan(rank_correlation([1, 2], [3, 4])["spearman"])  # too few pairs
    assert math.isnan(rank_correlation([1, 1, 1, 1], [1, 2, 3, 4])["spearman"])  # a constant predictor


def test_a_probe_head_replacing_a_checkpoint_head_is_saved_and_rebuilt(tiny_model_folder, tiny_csv, tmp_path):
    """recommend/validate rebuild the profiled model from the folder; a probe fitted over a head
    the checkpoint already has must travel in head.safetensors, or the rebuild uses the old head."""
    import transformers as tf
    from safetensors.torch import load_file

    from ntk_advisor.advice.recommend import placement_kernel
    from ntk_advisor.profiling.capture import capture
    from ntk_advisor.profiling.folder import load_profile, save_profile
    from ntk_advisor.profiling.profiler import ProfileConfig, profile

    # The shared tiny BERT's init (std 0.02) makes its pooled features nearly constant, so a
    # probe comes out exactly zero; a wider init gives a probe, and gradients, to compare.
    model_dir = tmp_path / "wide-init"
    config = tf.AutoConfig.from_pretrained(tiny_model_folder, initializer_range=0.5)
    torch.manual_seed(0)
    tf.BertForSequenceClassification(config).save_pretrained(model_dir)
    tf.AutoTokenizer.from_pretrained(tiny_model_folder).save_pretrained(model_dir)
    result = profile(ProfileConfig(model=str(model_dir), data=str(tiny_csv), samples=10, max_length=16))
    assert float(result.head["classifier.weight"].abs().max()) > 0
    folder = save_profile(result, tmp_path / "profile")
    assert {"classifier.weight", "classifier.bias"} <= set(load_file(str(folder / "head.safetensors")))
    captured = capture(load_profile(folder))
    name = "bert.encoder.layer.1.output.dense"
    rebuilt = placement_kernel(captured, {name: Slices("rows", tuple(range(16)))}, "rocoft")
    stored = captured.profile.kernels[name]
    assert float(stored.norm()) > 0
    assert float((rebuilt - stored).norm() / stored.norm()) < 1e-5


def test_output_jacobian_matches_autograd_per_example(tiny_model):
    from conftest import tiny_batch

    from ntk_advisor.ntk.linearization import output_jacobian

    model = tiny_model.logits_model.eval()
    batch = tiny_batch(n=4, t=6)
    params = {n: p for n, p in model.named_parameters() if n.endswith(("value.weight", "c_attn.weight", "v_proj.weight",
                                                                       "classifier.weight", "score.weight"))}
    jac = output_jacobian(model, params, batch, chunk_size=3)
    assert jac.shape[:2] == (4, 2) and jac.shape[2] == sum(p.numel() for p in params.values())
    for i in range(4):
        outputs = model(**{k: v[i : i + 1] for k, v in batch.items()})[0]
        for c in range(2):
            grads = torch.autograd.grad(outputs[c], list(params.values()), retain_graph=True)
            expected = torch.cat([g.flatten() for g in grads])
            assert torch.allclose(jac[i, c], expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("strength", [0.0, 1e-2, 1.0])
def test_linear_model_of_a_trainable_head_is_ridge_regression_on_its_features(tiny_model_folder, strength):
    """Only the head trains: the model is exactly linear in it, so f_lin must equal the primal
    ridge solution per output on features [h, 1] with ridge n·λ."""
    from ntk_advisor.inputs import models
    from ntk_advisor.inputs.head_features import head_inputs
    from ntk_advisor.study.linear_model import linear_model_predictions, placement_kernels

    loaded = models.load_classifier(str(tiny_model_folder), num_labels=2, dtype=torch.float64)
    for name, p in loaded.backbone.named_parameters():
        p.requires_grad_(name.startswith("classifier"))
    words = ["good great fun", "bad awful dull", "the film was fine", "a very poor plot", "not so good", "fun fun",
             "dull movie", "great plot"]
    fit_texts, test_texts = words[:6], words[6:]
    labels = [1, 0, 1, 0, 0, 1]
    kernels = placement_kernels(loaded.logits_model, loaded.encode, fit_texts, test_texts, 16, batch_size=4)
    got = linear_model_predictions(kernels, labels, strength)

    def features(texts):
        h = head_inputs(loaded, texts, 16).double()
        return torch.cat([h, torch.ones(len(texts), 1, dtype=h.dtype)], 1)

    phi, phi_test = features(fit_texts), features(test_texts)
    residual = torch.eye(2, dtype=torch.float64)[labels] - kernels.f0_train
    ridge = len(labels) * strength + 1e-8 * float(torch.diagonal(phi @ phi.T).mean())
    weights = torch.linalg.solve(phi.T @ phi + ridge * torch.eye(phi.shape[1], dtype=phi.dtype), phi.T @ residual)
    expected = kernels.f0_test + phi_test @ weights
    assert np.allclose(got, expected.numpy(), rtol=1e-6, atol=1e-8)


def test_lambda_sweep_reports_linear_model_and_pulls_toward_theta0(tiny_model_folder, tiny_csv, tmp_path):
    config = tiny_config(tiny_model_folder, tiny_csv, placements=0, lambdas=(0.0, 30.0), steps=30,
                         learning_rate=2e-2)
    document = validate(config, tmp_path / "sweep")
    rows = {row["lambda"]: row for row in document["sweep"]}
    assert set(rows) == {0.0, 30.0} and document["placements"] == {}
    assert all(0.0 <= r["linear_model_accuracy"] <= 1.0 for r in rows.values())
    assert rows[30.0]["distance_from_theta0"] < 0.5 * rows[0.0]["distance_from_theta0"]
    linear = json.loads((tmp_path / "sweep" / "sweep" / "linear.json").read_text())
    assert linear["fit_examples"] == 24 and linear["test_examples"] == 24


def test_bad_study_settings_are_clear_errors(tiny_model_folder, tiny_csv, tmp_path):
    with pytest.raises(ValidateError, match="at least 3"):
        tiny_config(tiny_model_folder, tiny_csv, placements=2).check()
    with pytest.raises(ValidateError, match="nothing to do"):
        tiny_config(tiny_model_folder, tiny_csv, placements=0).check()
    with pytest.raises(ValidateError, match="lambdas"):
        tiny_config(tiny_model_folder, tiny_csv, lambdas=(-1.0,)).check()
    with pytest.raises(ValidateError, match="unknown --allocation 'even'"):
        tiny_config(tiny_model_folder, tiny_csv, allocation="even").check()
    from ntk_advisor.errors import RecipeError

    with pytest.raises(RecipeError, match="budget"):  # smaller than the head alone
        validate(tiny_config(tiny_model_folder, tiny_csv, budget=10), tmp_path / "small")


def test_summary_of_synthetic_runs_ranks_and_correlates():
    """study.summarize on made-up numbers: means, spreads, ranking and the sign of ρ are exact."""
    from ntk_advisor.study.summary import best_predictor, summarize

    accuracies = {"a": [0.9, 0.3], "b": [0.7], "c": [0.6], "d": [0.5]}  # a's seed-1 run alone is bad
    plan = {"budget": 100, "head": 10, "duplicates": {}, "placements": {
        name: {"method": "rocoft", "kind": "baseline", "objective": None, "placement": {}, "scores": {},
               "predicted": {"weights": 90, "loo_accuracy": 0.5, "effective_rank": 3.0, "distance_to_full": 0.1,
                             "objectives": {"alignment": rank, "loo": -rank, "lambda_min": 1.0, "condition": -1.0,
                                            "trace": rank}}}
        for rank, name in zip([4.0, 3.0, 2.0, 1.0], accuracies)}}
    results = {f"runs/{name}/seed-{s}": {"test": {"accuracy": acc}, "validation_best": {"accuracy": acc},
                                         "loss_curve": [1.0, 0.5], "linearization_gap": 0.5}
               for name, accs in accuracies.items() for s, acc in enumerate(accs)}
    document = summarize(ValidateConfig(resamples=100), plan, results, None)
    a = document["placements"]["a"]["test_accuracy"]
    assert a["n"] == 2 and a["mean"] == pytest.approx(0.6) and a["std"] == pytest.approx(0.4242641, rel=1e-5)
    # Ranked and correlated on the seed every placement ran (seed-0), not on unequal seed sets:
    # on all-seed means a (0.6) would fall below b (0.7) for a seed that b never ran.
    assert document["common_seeds"] == ["seed-0"]
    assert document["ranking"] == ["a", "b", "c", "d"]
    table = document["correlations"]["test_accuracy"]
    assert table["objective:alignment"]["spearman"] == pytest.approx(1.0)
    assert table["objective:loo"]["spearman"] == pytest.approx(-1.0)
    assert math.isnan(table["loo_accuracy"]["spearman"])  # a constant predictor ranks nothing
    assert best_predictor(document)[0] in ("objective:alignment", "objective:trace")


def test_a_zero_probe_is_reported_not_silently_profiled(tiny_model_folder, tiny_csv):
    """The shared tiny BERT's pooled features barely vary, so its probe is exactly zero."""
    from ntk_advisor.profiling.profiler import ProfileConfig, profile

    result = profile(ProfileConfig(model=str(tiny_model_folder), data=str(tiny_csv), samples=8, max_length=16))
    assert any("exactly zero" in w for w in result.warnings)


def test_named_arms_are_exactly_the_plan(tiny_model_folder, tiny_csv, tmp_path):
    arms = ("first-k", "advised", "random", "random-2")
    document = validate(tiny_config(tiny_model_folder, tiny_csv, arms=arms, key_placements=()), tmp_path / "s")
    plan = json.loads((tmp_path / "s" / "plan.json").read_text())
    # Every arm is trained, or recorded as the duplicate of an earlier arm with the same placement.
    assert [n for n in arms if n in plan["placements"]] == list(plan["placements"])
    assert set(plan["placements"]) | set(plan["duplicates"]) == set(arms)
    assert plan["placements"]["random"]["placement"] != plan["placements"]["random-2"]["placement"]
    assert set(document["placements"]) == set(plan["placements"])


def test_unknown_arms_are_clear_errors(tiny_model_folder, tiny_csv):
    with pytest.raises(ValidateError, match="unknown arm 'best'"):
        tiny_config(tiny_model_folder, tiny_csv, arms=("advised", "best")).check()
    with pytest.raises(ValidateError, match="twice"):
        tiny_config(tiny_model_folder, tiny_csv, arms=("advised", "advised")).check()


def test_paired_difference_uses_only_shared_seeds():
    from ntk_advisor.study.summary import paired_difference

    a = {f"runs/a/seed-{s}": {"test_accuracy": v} for s, v in enumerate([0.80, 0.82, 0.78])}
    b = {f"runs/b/seed-{s}": {"test_accuracy": v} for s, v in enumerate([0.79, 0.80, 0.77, 0.99])}
    d = paired_difference(a, b)
    assert d["n"] == 3 and d["mean"] == pytest.approx(0.04 / 3, abs=1e-12)
    assert d["sem"] == pytest.approx(np.std([0.01, 0.02, 0.01], ddof=1) / math.sqrt(3))


def test_shards_on_one_folder_write_the_study_of_one_process(tiny_model_folder, tiny_csv, tmp_path):
    import os
    import subprocess
    import sys

    from dataclasses import replace

    # the settings the CLI below builds: tiny_config's, with the CLI's own head and resamples
    config = replace(tiny_config(tiny_model_folder, tiny_csv), head=ValidateConfig.head,
                     resamples=ValidateConfig.resamples)
    single = validate(config, tmp_path / "one")
    out = tmp_path / "two"
    command = [sys.executable, "-m", "ntk_advisor", "validate", "--out", str(out), "--shard", "1/2",
               "--model", str(tiny_model_folder), "--data", str(tiny_csv), "--budget", "400", "--placements", "4",
               "--seeds", "1", "--key-seeds", "2", "--key", "advised,first-k", "--steps", "3", "--batch-size", "16",
               "--samples", "12", "--max-length", "16", "--kernel-examples", "24"]
    other = subprocess.Popen(command, env=os.environ | {"OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        document = validate(config, out, shard=(0, 2))
    finally:
        stdout, stderr = other.communicate(timeout=600)
    assert other.returncode == 0, stderr[-2000:]
    assert "shard 1/2: its runs are done" in stdout
    assert document["ranking"] == single["ranking"]
    for name, figures in single["placements"].items():
        assert document["placements"][name]["test_accuracy"] == figures["test_accuracy"], name
    with pytest.raises(ValidateError, match="pass it to shard 0 only"):
        validate(config, out, force=True, shard=(1, 2))
    with pytest.raises(ValidateError, match="the shard must be 0 to 1 of 2"):
        validate(config, out, shard=(2, 2))
