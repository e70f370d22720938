"""ProfileConfig: every setting of a profile, with its default (the CLI reads them from here).

Importing this module loads no torch, so `ntk-advisor --help` stays instant.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ProfileError
from ..settings import Head, Reduction, Route, WeightDtype

# The probe's direction sets every δ, so it decides which rows look aligned. On vader-movie
# (3 seeds, README "Stability") 4,000 examples instead of 1,000 raised the probe's validation
# accuracy from 0.66 to 0.70 and the overlap of the chosen rows across seeds from 0.29 to 0.42.
PROBE_HEAD_EXAMPLES = 4000
SIGNAL_SAMPLES = 1024
# On SmolLM2 + bbc-headlines (docs/sft.md, "Cost") the LoRA ranks from M = 256 overlap those
# from M = 1,024 by 0.99 and the RoCoFT rows by 0.95, in 40 % of the profile's time.
SFT_SIGNAL_SAMPLES = 256


@dataclass(frozen=True)
class ProfileConfig:
    model: str = "minilm-l6"
    data: str = "vader-movie"
    text_column: str = "text"
    label_column: str = "label"
    samples: int = 64  # N, the probe sample
    max_length: int = 64  # T, tokens per example after truncation
    seed: int = 0  # splits, probe sample, head init
    reduction: str = Reduction.TRACE.value  # settings.Reduction says when to pick which
    head: str = Head.AUTO.value  # settings.Head
    task: str = "auto"  # classifier (new head on pooled features) or label-words (prompting); auto by model
    template: str | None = None  # label-words: the prompt, with {text}
    label_words: tuple[str, ...] = ()  # label-words: one single-token word per class (default ' ' + name)
    head_train_examples: int = PROBE_HEAD_EXAMPLES  # training examples (outside the probe) for the linear probe
    route: str = Route.STRUCTURED.value  # settings.Route
    ridge: float = 1e-3  # LOO kernel ridge strength, relative to the kernel's mean diagonal
    modules: tuple[str, ...] = ()  # restrict to these module names (default: every Linear)
    dtype: str = WeightDtype.FLOAT32.value  # settings.WeightDtype: half precision is contracted in float32
    capture_mib: int = 0  # captured x and δ per forward pass, MiB; 0: devices.capture_budget_mib of free memory
    device: str = "auto"  # devices.resolve_device: where the model and the contractions run
    # M, training examples for the O(M) label-gradient (SFT-gradient) row/column scores; 0: none;
    # None: the task's default, SIGNAL_SAMPLES or SFT_SIGNAL_SAMPLES.
    signal_samples: int | None = None

    @property
    def signal_examples(self) -> int:
        """M as set, or the task's default."""
        if self.signal_samples is not None:
            return self.signal_samples
        return SFT_SIGNAL_SAMPLES if self.task == "sft" else SIGNAL_SAMPLES

    def check(self) -> None:
        if self.seed < 0:
            raise ProfileError(f"--seed must be 0 or more, got {self.seed}")
        if self.capture_mib < 0:
            raise ProfileError(f"--capture-mib must be 0 (from the device's free memory) or more, got {self.capture_mib}")
        if self.signal_samples is not None and (self.signal_samples < 0 or self.signal_samples == 1):
            raise ProfileError(f"--signal-samples must be 0 (off) or at least 2 examples, got {self.signal_samples}")
        if self.samples < 2:
            raise ProfileError(f"--samples must be at least 2, got {self.samples}")
        if self.max_length < 1:
            raise ProfileError(f"--max-length must be at least 1 token, got {self.max_length}")
        Head.check(self.head, "--head", ProfileError)
        from ..tasks import task_names

        if self.task not in ("auto", "sft") and self.task not in task_names():
            raise ProfileError(f"unknown --task '{self.task}': use one of auto, {', '.join(task_names())}, sft")
        Route.check(self.route, "--route", ProfileError)
        Reduction.check(self.reduction, "--output", ProfileError)
        WeightDtype.check(self.dtype, "--dtype", ProfileError)
        from ..devices import check_device_name

        check_device_name(self.device)
