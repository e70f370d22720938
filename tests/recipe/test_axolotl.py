"""The recipe's `axolotl:` keys as axolotl 0.19 itself reads them: its pydantic config schema,
its `unfrozen_parameters` parser (utils/freeze.py) and the PEFT LoraConfig it builds from the
LoRA keys (loaders/adapter.py, `_build_peft_lora_config`; that module imports bitsandbytes,
so the test builds the same LoraConfig from the same keys). axolotl is installed for the
tests with --no-deps (scripts/setup.sh)."""

from __future__ import annotations

import pytest
from conftest import tiny_batch, tiny_classifier

from ntk_advisor.advice.recommend import RecommendConfig, recommend
from ntk_advisor.training.apply import apply_recipe

axolotl_config = pytest.importorskip("axolotl.utils.schemas.config", reason="scripts/setup.sh installs axolotl")
freeze = pytest.importorskip("axolotl.utils.freeze")
ANY_RUN = {"base_model": "local/model", "datasets": [{"path": "train.jsonl", "type": "alpaca"}],
           "micro_batch_size": 8, "gradient_accumulation_steps": 1, "learning_rate": 2e-3, "num_epochs": 1}


@pytest.fixture
def profile_dir(tiny_profile_dir):
    return tiny_profile_dir


def _trained_by_us(recipe):
    loaded = tiny_classifier("bert")
    model, _ = apply_recipe(loaded.backbone, recipe, loaded.head_name)
    return model


@pytest.mark.parametrize("method,training", [("rocoft", {}), ("lora", {}), ("lora", {"use_rslora": True})],
                         ids=["rocoft", "lora", "lora-rslora"])
def test_the_axolotl_keys_are_axolotl_config_keys(profile_dir, method, training):
    recipe = recommend(profile_dir, RecommendConfig(method=method, budget=400, training=training))
    assert recipe.axolotl.get("peft_use_rslora", False) == bool(training)
    section = recipe.axolotl
    fields = axolotl_config.AxolotlInputConfig.model_fields
    assert set(section) <= set(fields), sorted(set(section) - set(fields))  # axolotl ignores unknown keys silently
    parsed = axolotl_config.AxolotlInputConfig(**(ANY_RUN | section))
    for key, value in section.items():
        assert getattr(parsed, key) == value, key


def test_axolotl_unfreezes_exactly_the_recipes_rows_and_head(profile_dir):
    recipe = recommend(profile_dir, RecommendConfig(method="rocoft", budget=400))
    model = tiny_classifier("bert").backbone
    freeze.freeze_layers_except(model, recipe.axolotl["unfrozen_parameters"])
    batch = tiny_batch()
    model(**batch).logits.square().sum().backward()
    moved = {}
    for name, p in model.named_parameters():
        if p.grad is not None and p.grad.abs().sum() > 0:
            rows = (p.grad.reshape(p.shape[0], -1).abs().sum(dim=1) > 0).nonzero().flatten().tolist()
            moved[name] = rows
    wanted = {f"{t.module}.weight": sorted(t.indices) for t in recipe.targets}
    wanted |= {"classifier.weight": [0, 1], "classifier.bias": [0, 1]}
    assert moved == wanted
    ours = _trained_by_us(recipe)
    assert sum(p.numel() for p in ours.parameters() if p.requires_grad) == recipe.evidence["trainable"]["total"]
    assert sum(len(rows) * model.get_parameter(name)[0].numel() for name, rows in moved.items()) == \
        recipe.evidence["trainable"]["total"]


@pytest.mark.parametrize("training", [{}, {"use_rslora": True}], ids=["alpha-r", "rslora"])
def test_axolotl_lora_trains_what_ntk_advisor_trains(profile_dir, training):
    from peft import LoraConfig, TaskType, get_peft_model

    recipe = recommend(profile_dir, RecommendConfig(method="lora", budget=1_200, training=training))  # ranks 4, 32
    cfg = axolotl_config.AxolotlInputConfig(**(ANY_RUN | recipe.axolotl))
    theirs = get_peft_model(tiny_classifier("bert").backbone, LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=cfg.lora_target_modules,
        modules_to_save=cfg.lora_modules_to_save, rank_pattern=cfg.lora_rank_pattern or {},
        alpha_pattern=cfg.lora_alpha_pattern or {}, use_rslora=bool(cfg.peft_use_rslora), bias="none",
        task_type=TaskType.SEQ_CLS))
    ours = _trained_by_us(recipe)

    def trainable(model):
        return {n.removeprefix("base_model.model."): tuple(p.shape) for n, p in model.named_parameters()
                if p.requires_grad}

    assert trainable(theirs) == trainable(ours)
    assert sum(p.numel() for p in theirs.parameters() if p.requires_grad) == recipe.evidence["trainable"]["total"]
    scaling = {n: m.scaling for n, m in theirs.named_modules() if hasattr(m, "scaling") and isinstance(m.scaling, dict)}
    assert scaling == {n: m.scaling for n, m in ours.named_modules() if hasattr(m, "scaling")
                       and isinstance(m.scaling, dict)}
    assert len({r for r in cfg.lora_rank_pattern.values()}) > 1  # several ranks: the patterns were exercised


def test_convert_rebuilds_the_keys_of_an_older_recipe(profile_dir, tmp_path, capsys, monkeypatch):
    import yaml
    from helpers import run_cli

    from ntk_advisor.recipe.io import save_recipe

    recipe = recommend(profile_dir, RecommendConfig(method="rocoft", budget=400))
    escaped = [p.replace(".", "\\.") for p in recipe.axolotl["unfrozen_parameters"]]  # as recipes had them
    save_recipe(recipe.model_copy(update={"axolotl": {"unfrozen_parameters": escaped}}), tmp_path / "old.yaml")
    code, out, err = run_cli(["recipe", "convert", str(tmp_path / "old.yaml"), "--to", "axolotl"], capsys, monkeypatch)
    assert code == 0, err
    assert yaml.safe_load(out) == recipe.axolotl


def test_axolotl_keys_follow_an_integer_alpha_and_a_fractional_one_is_refused_in_one_line(
        profile_dir, tmp_path, capsys, monkeypatch):
    """axolotl's schema types lora_alpha as an int and refuses 1.5 (PEFT accepts it): the recipe
    then has no axolotl section, and `recipe convert --to axolotl` says why and what to do."""
    import yaml
    from helpers import run_cli

    from ntk_advisor.recipe.io import save_recipe

    whole = recommend(profile_dir, RecommendConfig(method="lora", budget=400, training={"lora_alpha": 2.0}))
    assert whole.axolotl["lora_alpha"] == 2 and isinstance(whole.axolotl["lora_alpha"], int)
    assert axolotl_config.AxolotlInputConfig(**(ANY_RUN | whole.axolotl)).lora_alpha == 2
    with pytest.raises(ValueError, match="valid integer"):
        axolotl_config.AxolotlInputConfig(**(ANY_RUN | whole.axolotl | {"lora_alpha": 1.5}))
    fractional = recommend(profile_dir, RecommendConfig(method="lora", budget=400, training={"lora_alpha": 1.5}))
    assert fractional.axolotl is None and fractional.peft["lora_alpha"] == 1.5
    save_recipe(fractional, tmp_path / "r.yaml")
    code, out, err = run_cli(["recipe", "convert", str(tmp_path / "r.yaml"), "--to", "axolotl"], capsys, monkeypatch)
    assert code != 0 and out == "" and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "lora_alpha as an integer" in err and "1.5" in err
    document = yaml.safe_load((tmp_path / "r.yaml").read_text())  # a hand edit back to an integer α
    document["training"]["lora_alpha"] = 2
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(document))
    code, out, err = run_cli(["recipe", "convert", str(tmp_path / "r.yaml"), "--to", "axolotl"], capsys, monkeypatch)
    assert code == 0, err
    assert yaml.safe_load(out) == whole.axolotl
