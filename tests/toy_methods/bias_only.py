"""A toy method: train only the biases of the chosen Linear modules (BitFit-style, Ben Zaken
et al. 2022). docs/design.md walks through it; tests/test_methods.py registers it and runs
it through recommend → train → export."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ntk_advisor.methods import Candidates, Method, Whole
from ntk_advisor.ntk.rows_cols import bias_kernel

ADAPTER = "adapter_model.safetensors"


class BiasOnly(Method):
    name = "bias-only"
    part_type = Whole
    baselines = ("first-modules",)
    unit_label = "biases"

    def part_cost(self, module, part) -> int:
        return module.d_out

    def check_part(self, module, part) -> str | None:
        return None if module.has_bias else f"'{module.name}' has no bias to train"

    def kernel_part(self, captured, name, part) -> torch.Tensor:
        return sum(bias_kernel(delta) for delta in captured.deltas[name])

    def candidates(self, captured, config) -> Candidates:
        found = Candidates([], [], [])
        for name, t in captured.targets.items():
            if t.has_bias:
                found.items.append((name, None))
                found.kernels.append(self.kernel_part(captured, name, Whole()))
                found.costs.append(t.d_out)
        return found

    def collect(self, chosen, config):
        return {name: Whole() for name, _ in chosen}

    def baseline(self, name, captured, config, budget):
        placement, left = {}, budget
        for t in captured.targets.values():  # modules in model order while the budget lasts
            if t.has_bias and t.d_out <= left:
                placement[t.name] = Whole()
                left -= t.d_out
        return placement

    def apply(self, model, recipe, extra_trainable, head_name):
        for p in model.parameters():
            p.requires_grad_(False)
        for target in recipe.targets:
            model.get_submodule(target.module).bias.requires_grad_(True)
        for name in extra_trainable:
            model.get_parameter(name).requires_grad_(True)
        return model

    def save(self, model, folder, recipe) -> None:
        folder = Path(folder)
        save_file({n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad},
                  str(folder / ADAPTER))
        (folder / "adapter_config.json").write_text(json.dumps({"method": self.name}))

    def owns_adapter(self, config: dict) -> bool:
        return config.get("method") == self.name

    def load(self, model, folder):
        with torch.no_grad():
            for name, value in load_file(str(Path(folder) / ADAPTER)).items():
                model.get_parameter(name).copy_(value)
        return model

    def merge(self, model):
        return model  # the biases are the model's own tensors: nothing to fold in
