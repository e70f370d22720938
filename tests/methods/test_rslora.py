"""training.use_rslora: PEFT's rank-stabilized scale α/√r (α = lora_alpha or 1), so that a
LoRA module's kernel at θ0 does not grow with its rank (with α = r it grows as r)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from helpers import tiny_recipe

from ntk_advisor.errors import RecipeError
from ntk_advisor.inputs.models import load_classifier
from ntk_advisor.recipe.conversions import axolotl_lora, peft_section
from ntk_advisor.recipe.io import apply_overrides
from ntk_advisor.recipe.schema import Target
from ntk_advisor.training.apply import apply_recipe
from ntk_advisor.training.loop import train


def _mean_kernel_trace(rank: int, rslora: bool, draws: int = 400, d_in: int = 64, alpha: float | None = None,
                       inputs: tuple[torch.Tensor, torch.Tensor] | None = None) -> float:
    """E_A[‖∂f/∂B‖²] at B = 0 for f = Σ_n v_nᵀ LoRA(W)(x_n) over PEFT's own init of A, whose mean
    is r·s²·σ²·Σ_nm (v_n·v_m)(x_n·x_m) with σ² = 1/(3·d_in) (docs/method.md §5)."""
    from peft import LoraConfig, get_peft_model

    generator = torch.Generator().manual_seed(1)
    x, v = inputs or (torch.randn(3, d_in, generator=generator), torch.randn(3, 8, generator=generator))
    section = peft_section((Target(module="0", rank=rank),), rank, alpha, 0.0, rslora)
    total = 0.0
    for seed in range(draws):
        torch.manual_seed(seed)
        model = get_peft_model(torch.nn.Sequential(torch.nn.Linear(d_in, 8)), LoraConfig(**section))
        b = next(p for n, p in model.named_parameters() if "lora_B" in n)
        (gradient,) = torch.autograd.grad((model(x) * v).sum(), b)
        total += float(gradient.pow(2).sum())
    return total / draws


def test_rslora_makes_the_kernel_at_theta0_the_same_whatever_the_rank():
    """Rank 16 against rank 1: α = r multiplies the kernel by 16, rsLoRA with α = 1 leaves it
    (a 30 % tolerance: the sampling error of 400 draws of A is about 8 %, and the two
    hypotheses differ 16-fold)."""
    assert _mean_kernel_trace(16, rslora=False) / _mean_kernel_trace(1, rslora=False) == pytest.approx(16, rel=0.3)
    assert _mean_kernel_trace(16, rslora=True) / _mean_kernel_trace(1, rslora=True) == pytest.approx(1, rel=0.3)


@pytest.mark.parametrize(("rank", "alpha", "rslora"), [(4, None, False), (4, 2.0, False), (4, None, True),
                                                      (4, 3.0, True)])
def test_the_kernel_evidence_scale_is_peft_s_squared_scale(rank, alpha, rslora):
    """kernel_part's r·σ²·K_W (written out by hand below) times kernel_scale against the mean
    kernel of PEFT's own module: s² is 1, 1/4, 1/4 and 9/4 here (α = r; α = 2 at r = 4; rsLoRA's
    α = 1 at r = 4; rsLoRA's α = 3 at r = 4, where α/r would give 9/16). A 25 % tolerance
    against 400 draws' sampling error of about 8 %."""
    from ntk_advisor.methods import get_method
    from ntk_advisor.methods.base import Rank
    from ntk_advisor.recipe.schema import Training

    generator = torch.Generator().manual_seed(2)
    x, v = torch.randn(3, 64, generator=generator), torch.randn(3, 8, generator=generator)
    expected = rank * float(((v @ v.T) * (x @ x.T)).sum()) / (3 * 64)  # kernel_part's r·σ²·(the kernel of W)
    scale = get_method("lora").kernel_scale(Rank(rank), Training(lora_alpha=alpha, use_rslora=rslora))
    assert scale == pytest.approx({(4, None, False): 1, (4, 2.0, False): 0.25, (4, None, True): 0.25,
                                   (4, 3.0, True): 2.25}[(rank, alpha, rslora)])
    measured = _mean_kernel_trace(rank, rslora, alpha=alpha, inputs=(x, v))
    assert measured == pytest.approx(scale * expected, rel=0.25)


def test_rslora_recipe_sets_peft_scale_and_the_keys_other_tools_read(tiny_model_folder, tiny_csv, tmp_path):
    recipe = apply_overrides(tiny_recipe(tiny_model_folder, tiny_csv, method="lora", max_steps=2),
                             ["training.use_rslora=true"])
    model, _ = apply_recipe(load_classifier(str(tiny_model_folder), num_labels=2).backbone, recipe, "classifier")
    scales = {name: layer.scaling["default"] for name, layer in model.named_modules()
              if isinstance(getattr(layer, "scaling", None), dict) and "default" in layer.scaling}
    ranks = {t.module: t.rank for t in recipe.targets}
    assert sorted(scales.values()) == pytest.approx(sorted(1 / math.sqrt(r) for r in ranks.values()))
    run = train(recipe, tmp_path / "run")
    assert run.metrics["steps"] == 2
    saved = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert saved["use_rslora"] is True and saved["lora_alpha"] == 1.0 and not saved["alpha_pattern"]
    section = peft_section(recipe.targets, 4, None, 0.0, rslora=True)
    assert section["use_rslora"] is True and section["lora_alpha"] == 1.0 and not section["alpha_pattern"]
    keys = axolotl_lora(ranks, None, rslora=True)
    assert keys["peft_use_rslora"] is True and keys["lora_alpha"] == 1.0 and not keys["lora_alpha_pattern"]
    assert "peft_use_rslora" not in axolotl_lora(ranks) and axolotl_lora(ranks)["lora_alpha_pattern"]


def test_rslora_is_refused_for_rocoft_when_the_recipe_is_read(tiny_model_folder, tiny_csv):
    with pytest.raises(RecipeError, match="use_rslora is a LoRA setting; this recipe's method is rocoft"):
        apply_overrides(tiny_recipe(tiny_model_folder, tiny_csv, max_steps=1), ["training.use_rslora=true"])


def test_the_peft_section_follows_an_override_of_the_scale_and_recommend_never_writes_a_refused_recipe(
        tiny_profile_dir, tmp_path, capsys, monkeypatch):
    from helpers import run_cli

    from ntk_advisor.advice.recommend import RecommendConfig, recommend
    from ntk_advisor.recipe.io import save_recipe

    recipe = recommend(tiny_profile_dir, RecommendConfig(method="lora", budget=900, training={"use_rslora": True}))
    assert recipe.peft["use_rslora"] is True and recipe.peft["lora_alpha"] == 1.0 and not recipe.peft["alpha_pattern"]
    plain = apply_overrides(recipe, ["training.use_rslora=false"])
    ranks = {t.module: t.rank for t in plain.targets}
    assert "use_rslora" not in plain.peft and set(plain.peft["alpha_pattern"].values()) == \
        set(ranks.values()) - {plain.peft["r"]} and plain.peft["lora_alpha"] == plain.peft["r"]
    assert plain.peft["target_modules"] == recipe.peft["target_modules"]  # only the scale keys change
    assert apply_overrides(plain, ["training.use_rslora=true"]).peft == recipe.peft
    # a hand edit of the file: `recipe convert --to peft` prints the scale the training section trains at
    document = yaml.safe_load(save_recipe(recipe, tmp_path / "r.yaml").read_text())
    document["training"]["use_rslora"] = False
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(document))
    code, out, err = run_cli(["recipe", "convert", str(tmp_path / "r.yaml"), "--to", "peft"], capsys, monkeypatch)
    assert code == 0, err
    assert "use_rslora" not in json.loads(out) and json.loads(out)["alpha_pattern"] == plain.peft["alpha_pattern"]
    with pytest.raises(RecipeError, match="use_rslora is a LoRA setting"):
        recommend(tiny_profile_dir, RecommendConfig(method="rocoft", budget=400, training={"use_rslora": True}))
