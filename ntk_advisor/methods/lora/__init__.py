"""LoRA through PEFT, from a recipe's targets and ranks (α = r per module by default)."""

from __future__ import annotations

from torch import nn

from ...recipe.conversions import default_rank, peft_section


def lora_config_kwargs(targets, alpha: float | None, dropout: float, head_name: str | None, bias: str,
                       rslora: bool = False) -> dict:
    """peft.LoraConfig keyword arguments: the recipe's peft keys, plus the head and biases it trains."""
    ranks = {t.module: t.rank for t in targets}
    return peft_section(targets, default_rank(ranks), alpha, dropout, rslora) | {
        "modules_to_save": [head_name] if head_name else None, "bias": bias}


def apply_lora(model: nn.Module, targets, alpha: float | None, dropout: float, head_name: str | None,
               train_bias: str, eva_rho: float | None = None, gradient_step=None, rslora: bool = False) -> nn.Module:
    """PEFT LoRA on ``targets``; with ``eva_rho``, configured for EVA (initialize_eva fills A);
    with ``gradient_step(model)`` (a forward and backward pass of the task's loss on training
    batches), PEFT's LoRA-GA (Wang et al., 2024): A and B from the SVD of each module's
    averaged gradient, the base weights offset so that the model at θ0 is unchanged."""
    from peft import EvaConfig, LoraConfig, get_peft_model

    bias = {"none": "none", "all": "all", "targets": "lora_only"}[train_bias]
    kwargs = lora_config_kwargs(targets, alpha, dropout, head_name, bias, rslora)
    if eva_rho is not None:
        # EVA matches patterns against names that carry PeftModel's "base_model.model." prefix,
        # which a "^" anchor can never match; full names are unambiguous without it.
        unanchored = {key: {k.removeprefix("^"): v for k, v in kwargs[key].items()} for key in ("rank_pattern", "alpha_pattern")}
        kwargs |= unanchored | {"init_lora_weights": "eva", "eva_config": EvaConfig(rho=eva_rho)}
    if gradient_step is not None:
        return _lora_ga(model, kwargs, gradient_step)
    return get_peft_model(model, LoraConfig(**kwargs))


def _lora_ga(model: nn.Module, kwargs: dict, gradient_step) -> nn.Module:
    """LoRA-GA moves the base weights, so a saved adapter alone would not rebuild the model:
    the initial adapter is kept, and `save_lora` converts to a plain LoRA (rank 2r) with it."""
    import tempfile
    from pathlib import Path

    from peft import LoraConfig, LoraGAConfig, get_peft_model
    from peft.tuners.lora import preprocess_loraga

    config = LoraConfig(**kwargs | {"init_lora_weights": "lora_ga", "lora_ga_config": LoraGAConfig()})
    preprocess_loraga(model, config, lambda: gradient_step(model))
    adapted = get_peft_model(model, config)
    initial = tempfile.TemporaryDirectory(prefix="ntk-advisor-lora-ga-")  # removed with the model object
    adapted.save_pretrained(Path(initial.name) / "initial")
    adapted.ntk_advisor_initial_adapter = initial
    return adapted


def save_lora(model: nn.Module, folder) -> None:
    """A PEFT folder that `PeftModel.from_pretrained` loads onto the unmodified base model."""
    from pathlib import Path

    initial = getattr(model, "ntk_advisor_initial_adapter", None)
    if initial is None:
        model.save_pretrained(folder)
        return
    model.save_pretrained(folder, path_initial_model_for_weight_conversion=str(Path(initial.name) / "initial"))


def initialize_eva(model: nn.Module, batches) -> None:
    """PEFT's EVA: each adapted module's A from the top right-singular vectors of its inputs
    on ``batches`` (incremental PCA), ranks moved to where the explained variance is."""
    from peft import initialize_lora_eva_weights

    initialize_lora_eva_weights(model, dataloader=batches, show_progress_bar=False)
