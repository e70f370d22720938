"""Supervised fine-tuning end to end on a tiny random Llama (mechanics only; the real model's
figures are in docs/sft.md): recommend on an SFT profile, train with the completion-only loss,
forgetting and generations, and export the merged causal LM, its ONNX and the PEFT adapter."""

from __future__ import annotations

import json
import math

import pytest
import yaml
import torch

from ntk_advisor.advice.recommend import RecommendConfig, recommend
from ntk_advisor.errors import RecipeError, TrainError
from ntk_advisor.inputs.completions import encode_completions
from ntk_advisor.recipe.io import parse_recipe, recipe_to_dict, save_recipe
from ntk_advisor.tasks import get_task
from ntk_advisor.tasks.completion import CompletionLogLikelihood

PAIRS = [("Review : good film", " positive"), ("Review : the plot was very dull and not fun", " negative"),
         ("Text : a", " great movie so fun"), ("Review : awful", " negative"), ("Text : fine", " fine film")]
HELDOUT = ["the plot was fun", "a great film", "dull and awful movie", "so good"]


@pytest.fixture(scope="module")
def sft_profile(tiny_llama_folder, tmp_path_factory):
    from ntk_advisor.profiling.folder import save_profile
    from ntk_advisor.profiling.profiler import ProfileConfig, profile

    root = tmp_path_factory.mktemp("sft")
    data = root / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in PAIRS * 8))
    result = profile(ProfileConfig(model=str(tiny_llama_folder), data=str(data), task="sft", samples=6,
                                   max_length=16, signal_samples=20, device="cpu"))
    return save_profile(result, root / "profile"), root


def test_recommend_lora_on_an_sft_profile_writes_a_causal_lm_recipe(sft_profile, monkeypatch):
    from ntk_advisor.profiling import capture as capture_module

    def no_passes(*args, **kwargs):
        raise AssertionError("LoRA advice on a causal LM must not rerun the capture passes (its memory peak)")

    monkeypatch.setattr(capture_module, "module_passes", no_passes)
    folder, _ = sft_profile
    recipe = recommend(folder, RecommendConfig(method="lora", budget=500))
    assert set(recipe.evidence["baselines_same_budget"]) == {"lora-qv"}  # RoCoFT's first-k would need them
    assert recipe.model.task == "sft" and recipe.data.heldout_text == "vader-movie"
    assert recipe.peft["task_type"] == "CAUSAL_LM" and "modules_to_save" not in recipe.peft  # no head to save
    assert 0 < recipe.evidence["trainable"]["total"] <= 500 and recipe.evidence["trainable"]["head"] == 0
    predicted = recipe.evidence["predicted"]
    assert math.isnan(predicted["alignment"]) and math.isnan(predicted["loo_accuracy"])  # no labels
    assert set(predicted["objectives"]) == {"lambda_min", "condition", "trace"}
    # the shipped study measured 460,800 parameters: more than twice 500, so nothing is quoted
    assert "unknown" in recipe.evidence["uncertainty"]["sentence"]
    assert "sft_study_nll_reduction" not in recipe.evidence["uncertainty"]
    from ntk_advisor.advice import uncertainty

    study = json.loads(uncertainty.SFT_EVIDENCE.read_text()) | {"budget": 500}
    (folder.parent / "sft_evidence.json").write_text(json.dumps(study))
    monkeypatch.setattr(uncertainty, "SFT_EVIDENCE", folder.parent / "sft_evidence.json")
    quoted = recommend(folder, RecommendConfig(method="lora", budget=500)).evidence["uncertainty"]
    assert "SFT study" in quoted["sentence"] and "sft_study_nll_reduction" in quoted  # LoRA's default rule, its budget
    from peft import LoraConfig

    LoraConfig(**recipe.peft)  # the section PEFT (and TRL's SFTTrainer) reads, as it is


def test_sft_lora_evidence_is_at_the_scale_the_recipe_trains_at(sft_profile, tiny_llama_folder):
    """An SFT recipe trains under rsLoRA (α = 1): each placed module's expected kernel is then
    σ²·K_W whatever its rank, so the evidence's trace is Σ tr(K_W)/(3·d_in) over the placed
    modules; at α = r it is Σ r·tr(K_W)/(3·d_in). The lora-qv reference trains at α = r either way."""
    from ntk_advisor.profiling.capture import capture
    from ntk_advisor.profiling.folder import load_profile

    folder, _ = sft_profile
    captured = capture(load_profile(folder))
    rslora = recommend(folder, RecommendConfig(method="lora", budget=500))
    plain = recommend(folder, RecommendConfig(method="lora", budget=500, training={"use_rslora": False}))
    assert rslora.training.use_rslora and not plain.training.use_rslora
    ranks = [t.rank for t in plain.targets]
    assert [t.rank for t in rslora.targets] == ranks and max(ranks) > 1

    def trace(target, rank):
        kernel, d_in = captured.profile.kernels[target.module], captured.targets[target.module].d_in
        return rank * float(torch.trace(kernel)) / (3 * d_in)

    assert rslora.evidence["predicted"]["trace"] == pytest.approx(sum(trace(t, 1) for t in rslora.targets), rel=1e-6)
    assert plain.evidence["predicted"]["trace"] == pytest.approx(sum(trace(t, t.rank) for t in plain.targets), rel=1e-6)
    assert rslora.evidence["baselines_same_budget"] == plain.evidence["baselines_same_budget"]
    # the kernel search ranks steps by the kernel each adds, which rsLoRA's does not: it keeps α = r,
    # asked for (--allocation free) or as the fallback of a profile without the gradient's spectrum
    free = recommend(folder, RecommendConfig(method="lora", budget=500, allocation="free"))
    assert not free.training.use_rslora and "use_rslora" not in free.peft
    from ntk_advisor.profiling.folder import save_profile
    from ntk_advisor.profiling.profiler import ProfileConfig, profile

    _, root = sft_profile
    bare = save_profile(profile(ProfileConfig(model=str(tiny_llama_folder), data=str(root / "pairs.jsonl"), task="sft",
                                              samples=6, max_length=16, signal_samples=0, device="cpu")), root / "bare")
    fallback = recommend(bare, RecommendConfig(method="lora", budget=500))
    assert rslora.evidence["objective"] == "label_signal"  # the spectrum rule ranked the ranks
    assert fallback.evidence["objective"] == "trace" and not fallback.training.use_rslora  # the kernel search did


def test_recommend_rocoft_on_an_sft_profile_seeds_each_module_with_its_top_gradient_row(sft_profile):
    from ntk_advisor.profiling.folder import load_profile

    folder, _ = sft_profile
    recipe = recommend(folder, RecommendConfig(method="rocoft", budget=400))
    assert set(recipe.evidence["baselines_same_budget"]) == {"first-k", "lora-qv"}  # the passes ran anyway
    rows = load_profile(folder).scores["rows_signal"]
    assert recipe.targets and all(t.axis == "rows" for t in recipe.targets)
    for target in recipe.targets:  # the coverage seed: every module's first row is its largest ‖G[i, :]‖²
        assert int(torch.argmax(rows[target.module])) in target.indices


def test_rocoft_sft_advice_held_a_module_and_two_examples_at_a_time_is_the_same(sft_profile, monkeypatch):
    """--capture-mib below one module's captures: each module is a group, its passes run two
    examples at a time (the causal LM's logits graph is most of the peak), the recipe is the same."""
    from ntk_advisor.profiling import capture as capture_module
    from ntk_advisor.profiling.folder import load_profile

    folder, _ = sft_profile
    whole = recommend(folder, RecommendConfig(method="rocoft", budget=400))
    monkeypatch.setattr(capture_module, "PASS_EXAMPLES", 2)
    grouped = recommend(folder, RecommendConfig(method="rocoft", budget=400, capture_mib=1e-6))
    assert [(t.module, t.indices) for t in grouped.targets] == [(t.module, t.indices) for t in whole.targets]
    assert grouped.evidence["predicted"]["trace"] == pytest.approx(whole.evidence["predicted"]["trace"], rel=1e-6)
    sizes = []  # and the passes did run two examples at a time
    real = capture_module.module_passes
    monkeypatch.setattr(capture_module, "module_passes",
                        lambda model, batch, *a, **k: sizes.append(len(batch["input_ids"])) or real(model, batch, *a, **k))
    captured = capture_module.capture(load_profile(folder), capture_mib=1e-6)
    captured.x[next(iter(captured.targets))]
    assert sizes == [2, 2, 2]


def test_labelled_objectives_are_refused_for_sft(sft_profile):
    folder, _ = sft_profile
    with pytest.raises(RecipeError, match="needs labels.*supervised fine-tuning"):
        recommend(folder, RecommendConfig(method="lora", budget=500, objective="alignment"))


def test_sft_loss_is_the_completion_only_cross_entropy(tiny_llama_folder):
    """The task's loss equals transformers' own loss with every prompt token's label set to -100."""
    loaded = get_task("sft").load_model(str(tiny_llama_folder), torch.float64)
    inputs = encode_completions(loaded.tokenizer, [p for p, _ in PAIRS], [c for _, c in PAIRS], 16)
    count = inputs["completion_mask"][:, 1:].sum()
    ours = get_task("sft").loss(loaded.logits_model(**inputs), count)
    labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)
    theirs = loaded.backbone(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], labels=labels).loss
    # transformers computes its loss on float32 logits (ForCausalLMLoss upcasts), so float32's 1e-6
    torch.testing.assert_close(ours.float(), theirs, rtol=1e-6, atol=1e-7)


@pytest.fixture(scope="module")
def sft_run(sft_profile):
    from ntk_advisor.training.loop import train

    folder, root = sft_profile
    heldout = root / "heldout.jsonl"
    heldout.write_text("".join(json.dumps({"text": t}) + "\n" for t in HELDOUT))
    recipe = recommend(folder, RecommendConfig(method="lora", budget=500))
    recipe = recipe.model_copy(update={
        "data": recipe.data.model_copy(update={"heldout_text": str(heldout)}),
        "training": recipe.training.model_copy(update={"max_steps": 6, "batch_size": 8, "learning_rate": 3e-2})})
    result = train(recipe, root / "run", device="cpu")
    return result, recipe


def test_train_sft_reports_nll_perplexity_forgetting_and_generations(sft_run):
    result, _ = sft_run
    m = result.metrics
    assert m["validation_best"]["nll"] == min(h["nll"] for h in m["history"])  # the best state is the lowest NLL
    assert math.isclose(m["test"]["perplexity"], math.exp(m["test"]["nll"]), rel_tol=1e-9)
    assert m["test"]["completion_tokens"] > 0 and 0 <= m["test"]["exact_match"] <= 1
    forgetting = m["forgetting"]
    assert forgetting["texts"] == len(HELDOUT)
    assert math.isclose(forgetting["increase"], forgetting["nll_after"] - forgetting["nll_theta0"], rel_tol=1e-9)
    assert forgetting["nll_after"] != forgetting["nll_theta0"]  # the adapter moved the LM
    lines = (result.out / "generations.jsonl").read_text().splitlines()
    assert 0 < len(lines) <= 8 and {"prompt_end", "expected", "generated"} <= set(json.loads(lines[0]))


def test_the_trained_sft_adapter_is_a_peft_folder_and_exports_merged(sft_run, tiny_llama_folder, tmp_path):
    import transformers as tf
    from peft import PeftModel

    from ntk_advisor.exporting.export import export

    result, _ = sft_run
    tokenizer = tf.AutoTokenizer.from_pretrained(tiny_llama_folder)
    inputs = encode_completions(tokenizer, [p for p, _ in PAIRS], [c for _, c in PAIRS], 16)
    base = tf.AutoModelForCausalLM.from_pretrained(tiny_llama_folder, attn_implementation="eager")
    adapted = PeftModel.from_pretrained(base, result.out / "adapter").eval()  # as a PEFT user loads it
    with torch.no_grad():
        expected = CompletionLogLikelihood(adapted)(**inputs)
    hf = export(result.out, "hf", tmp_path / "hf")
    merged = tf.AutoModelForCausalLM.from_pretrained(hf.out, attn_implementation="eager").eval()
    with torch.no_grad():
        torch.testing.assert_close(CompletionLogLikelihood(merged)(**inputs), expected, rtol=1e-4, atol=1e-4)
    assert not (hf.out / "config.json").read_text().count("LABEL_0")  # a causal LM, not a named classifier
    onnx = export(result.out, "onnx", tmp_path / "onnx")
    assert onnx.max_abs_logit_difference is not None and onnx.max_abs_logit_difference <= 1e-3


def test_a_prompt_that_fills_max_length_is_refused_for_training(sft_profile):
    from ntk_advisor.training.loop import train

    folder, root = sft_profile
    recipe = recommend(folder, RecommendConfig(method="lora", budget=500))
    recipe = recipe.model_copy(update={"data": recipe.data.model_copy(update={"max_length": 2})})
    with pytest.raises(TrainError, match="every one of the 40 prompts fills max length 2"):
        train(recipe, root / "never", device="cpu")
    assert not (root / "never").exists()


def test_an_sft_recipe_round_trips_through_yaml(sft_profile, tmp_path):
    from ntk_advisor.recipe.io import load_recipe

    folder, _ = sft_profile
    recipe = recommend(folder, RecommendConfig(method="lora", budget=500))
    save_recipe(recipe, tmp_path / "r.yaml")
    written = yaml.safe_load((tmp_path / "r.yaml").read_text())
    # A causal LM on completions has no classes, head or label column: the recipe does not pretend to.
    assert not {"num_labels", "head_init"} & set(written["model"])
    assert not {"text_column", "label_column"} & set(written["data"])
    again = load_recipe(tmp_path / "r.yaml")
    assert again.model.task == "sft" and again.data.heldout_text == recipe.data.heldout_text
    assert [(t.module, t.rank) for t in again.targets] == [(t.module, t.rank) for t in recipe.targets]


def test_the_sft_commands_from_the_shell(tiny_llama_folder, tmp_path, capsys, monkeypatch):
    """profile --task sft, recommend, train and export as a user runs them, each answering in one screen."""
    from tests.helpers import run_cli

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in PAIRS * 8))
    code, _, err = run_cli(["profile", "--model", str(tiny_llama_folder), "--data", str(data), "--task", "sft",
                            "--samples", "6", "--max-length", "16", "--device", "cpu", "--out",
                            str(tmp_path / "profile")], capsys, monkeypatch)
    assert code == 0, err
    code, out, err = run_cli(["recommend", str(tmp_path / "profile"), "--method", "lora", "--budget", "500",
                              "--out", str(tmp_path / "recipe.yaml")], capsys, monkeypatch)
    assert code == 0, err
    code, out, err = run_cli(["train", str(tmp_path / "recipe.yaml"), "training.max_steps=2", "training.batch_size=8",
                              "data.heldout_text=" + str(data), "--out", str(tmp_path / "run"), "--device", "cpu"],
                             capsys, monkeypatch)
    assert code == 0, err
    assert "test completion NLL" in out and "perplexity" in out and "forgetting: NLL of" in out
    assert "validation completion NLL" in err  # the epoch line
    code, out, err = run_cli(["export", str(tmp_path / "run"), "--format", "hf", "--out", str(tmp_path / "hf")],
                             capsys, monkeypatch)
    assert code == 0, err
    assert (tmp_path / "hf" / "config.json").exists() and (tmp_path / "hf" / "export_report.json").exists()


@pytest.mark.parametrize("records, message", [
    ([{"prompt": "Review : good", "completion": ""}], "has no completion text"),
    ([{"messages": [{"role": "user", "content": "hi"}]}], "ends with a 'user' turn"),
    ([{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes"}]}],
     "tokenizer has no chat template"),
    ([{"review": "good"}], "supervised fine-tuning reads 'prompt' and 'completion'"),
])
def test_bad_sft_data_is_one_line_and_leaves_no_profile(tiny_llama_folder, tmp_path, capsys, monkeypatch, records,
                                                         message):
    from tests.helpers import assert_one_line_error, run_cli

    data = tmp_path / "bad.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    code, _, err = run_cli(["profile", "--model", str(tiny_llama_folder), "--data", str(data), "--task", "sft",
                            "--samples", "2", "--device", "cpu", "--out", str(tmp_path / "profile")], capsys,
                           monkeypatch)
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "profile").exists()


def test_trl_sft_trainer_trains_the_recipes_peft_section_as_it_is(sft_profile, tiny_llama_folder, tmp_path):
    """examples/trl_sft.py on the tiny Llama: SFTTrainer(peft_config=LoraConfig(**recipe.peft)) adapts exactly the
    recipe's modules at its ranks, with as many trainable parameters as the recipe counts."""
    pytest.importorskip("trl")
    from ntk_advisor.recipe.io import save_recipe
    from tests.test_examples import load

    folder, root = sft_profile
    recipe = recommend(folder, RecommendConfig(method="lora", budget=500))
    save_recipe(recipe, tmp_path / "recipe.yaml")
    summary = load("trl_sft").main(tmp_path / "recipe.yaml", steps=2, examples=8, model_source=str(tiny_llama_folder))
    assert summary["ranks"] == summary["recipe_ranks"]
    assert summary["trainable"] == summary["recipe_trainable"]
    assert len(summary["losses"]) == 2 and all(math.isfinite(x) and x > 0 for x in summary["losses"])


def test_lora_ga_starts_at_theta0_and_its_saved_adapter_rebuilds_the_trained_model(sft_profile, tiny_llama_folder,
                                                                                     tmp_path):
    """LoRA-GA (a rival of the SFT goal) moves the base weights; the saved adapter must still load onto the
    unmodified base model (PEFT's conversion to a plain LoRA) and give the trained model's outputs."""
    import transformers as tf
    from peft import PeftModel

    from ntk_advisor.methods import get_method
    from ntk_advisor.training.apply import apply_recipe

    folder, _ = sft_profile
    recipe = recommend(folder, RecommendConfig(method="lora", budget=500))
    assert recipe.training.use_rslora  # advised SFT ranks train at α/√r by default, which LoRA-GA cannot save
    with pytest.raises(RecipeError, match="lora_init=loraga cannot be saved with use_rslora"):
        parse_recipe(recipe_to_dict(recipe) | {"training": recipe_to_dict(recipe)["training"] | {"lora_init": "loraga"}})
    assert not recommend(folder, RecommendConfig(method="lora", budget=500,
                                                 training={"lora_init": "loraga"})).training.use_rslora
    recipe = recipe.model_copy(update={"training": recipe.training.model_copy(update={"lora_init": "loraga",
                                                                                      "use_rslora": False})})
    task = get_task("sft")
    tokenizer = tf.AutoTokenizer.from_pretrained(tiny_llama_folder)
    inputs = encode_completions(tokenizer, [p for p, _ in PAIRS], [c for _, c in PAIRS], 16)
    count = inputs["completion_mask"][:, 1:].sum()

    def fresh():
        return tf.AutoModelForCausalLM.from_pretrained(tiny_llama_folder, attn_implementation="eager").eval()

    with torch.no_grad():
        before = CompletionLogLikelihood(fresh())(**inputs)
    steps = []

    def gradient_step(model):
        steps.append(1)
        task.loss(CompletionLogLikelihood(model)(**inputs), count).backward()

    trained, _ = apply_recipe(fresh(), recipe, None, gradient_step=gradient_step)
    assert steps == [1]
    lora_b = [p for n, p in trained.named_parameters() if "lora_B" in n]
    assert lora_b and all(float(p.abs().sum()) > 0 for p in lora_b)  # B starts from the gradient, not at 0
    with torch.no_grad():
        torch.testing.assert_close(CompletionLogLikelihood(trained)(**inputs), before, rtol=1e-4, atol=1e-4)
    optimizer = torch.optim.AdamW([p for p in trained.parameters() if p.requires_grad], lr=5e-2)
    for _ in range(3):
        task.loss(CompletionLogLikelihood(trained)(**inputs), count).backward()
        optimizer.step()
        optimizer.zero_grad()
    trained.eval()
    with torch.no_grad():
        expected = CompletionLogLikelihood(trained)(**inputs)
    assert not torch.allclose(expected, before, atol=1e-3)
    get_method("lora").save(trained, tmp_path / "adapter", recipe)
    loaded = PeftModel.from_pretrained(fresh(), tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(CompletionLogLikelihood(loaded)(**inputs), expected, rtol=1e-4, atol=1e-4)
