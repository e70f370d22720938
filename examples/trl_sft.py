"""An SFT recipe's `peft` section handed to TRL's SFTTrainer as it is, on the recipe's own data.

`ntk-advisor recommend --method lora` on a `profile --task sft` profile writes a recipe whose
`peft` section is a complete `LoraConfig` (target_modules, rank_pattern, the scale:
use_rslora and lora_alpha, task_type CAUSAL_LM). TRL trains exactly those modules at those ranks with its
completion-only loss; this script checks that the adapter TRL trained is the one the recipe
describes. TRL is a `dev` extra (`pip install -e ".[dev]"`). On an SFT recipe of SmolLM2
(the README's "Supervised fine-tuning" commands write one; no recipe of it is shipped):

    ntk-advisor profile --task sft --model smollm2-135m --data bbc-headlines --samples 32 --max-length 128 --out sft-prof/
    ntk-advisor recommend sft-prof/ --method lora --budget 460800 --out sft.yaml
    .venv/bin/python examples/trl_sft.py sft.yaml [--steps 4]
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path


def main(recipe_path: str | Path, steps: int = 4, examples: int = 32, model_source: str | None = None) -> dict:
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from ntk_advisor import load_recipe, split_dataset
    from ntk_advisor.inputs.completions import load_completions
    from ntk_advisor.inputs.models import resolve_model_source

    recipe = load_recipe(recipe_path)
    source = model_source or resolve_model_source(recipe.model.name)  # a local folder: nothing is downloaded
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.eos_token is None:  # TRL ends every completion with EOS; a word-level test tokenizer has none
        tokenizer.eos_token = tokenizer.pad_token
    train = split_dataset(load_completions(recipe.data.source, tokenizer), seed=recipe.data.seed).train
    rows = {"prompt": list(train.texts[:examples]), "completion": list(train.completions[:examples])}
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    with tempfile.TemporaryDirectory() as out:
        trainer = SFTTrainer(
            model=model, processing_class=tokenizer, train_dataset=datasets.Dataset.from_dict(rows),
            peft_config=LoraConfig(**recipe.peft),  # the recipe's section, unchanged
            args=SFTConfig(output_dir=out, max_steps=steps, per_device_train_batch_size=min(8, examples),
                           learning_rate=recipe.training.learning_rate, max_length=recipe.data.max_length,
                           completion_only_loss=True, logging_steps=1, report_to=[], save_strategy="no",
                           use_cpu=True, seed=recipe.training.seed))
        trainer.train()
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        ranks = {}
        for name, module in trainer.model.named_modules():
            lora_a = getattr(module, "lora_A", None)
            if lora_a is not None and "default" in lora_a:
                ranks[re.sub(r"^base_model\.model\.", "", name)] = lora_a["default"].out_features
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    return {"losses": losses, "ranks": ranks, "trainable": trainable,
            "recipe_ranks": {t.module: t.rank for t in recipe.targets},
            "recipe_trainable": recipe.evidence.get("trainable", {}).get("total")}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", help="an SFT LoRA recipe (ntk-advisor recommend on a profile --task sft)")
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    summary = main(args.recipe, args.steps)
    same = summary["ranks"] == summary["recipe_ranks"]
    print(f"TRL trained {len(summary['ranks'])} modules, {summary['trainable']:,} parameters "
          f"(the recipe: {len(summary['recipe_ranks'])} modules, {summary['recipe_trainable']:,}); ranks as the recipe "
          f"says: {same}; losses {', '.join(f'{x:.3f}' for x in summary['losses'])}")
