"""Every choice a setting offers, as an enum that says when to pick each value.

Configs (``profiling/config.py``, ``advice/config.py``, ``study/config.py``) store plain
strings and check them here; the CLI's help and its error messages list the same values.
The math package (``ntk/``) imports only torch, so it keeps its own tuples of reductions and
objectives; ``tests/test_settings.py`` holds the two equal. Importing this module loads no
torch.
"""

from __future__ import annotations

from enum import Enum

from .errors import NtkAdvisorError


class Choice(str, Enum):
    """A setting's allowed values; ``check`` turns a bad one into a one-line error."""

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(member.value for member in cls)

    @classmethod
    def check(cls, value: str, option: str, error: type[NtkAdvisorError]) -> str:
        if value not in cls.values():
            raise error(f"unknown {option} '{value}': use one of {', '.join(cls.values())}")
        return value


class Reduction(Choice):
    """How the C outputs of an example enter the kernel (docs/method.md §2).

    - ``trace`` (default): K[n, m] = Σ_c J_c(x_n)·J_c(x_m), N×N for any number of classes. The
      cheapest exact kernel; pick it unless you need one of the others.
    - ``margin``: f = f_1 − f_0, N×N, binary tasks only; the kernel Malladi et al. (2023) use
      for binary fine-tuning. Same cost as trace with one output.
    - ``full``: the (N·C)×(N·C) kernel with every output pair; C² times the memory, for
      studies of how classes interact.
    """

    TRACE = "trace"
    MARGIN = "margin"
    FULL = "full"


class Head(Choice):
    """Which head the profile's kernels are taken through (the head sets every δ).

    - ``auto`` (default): the task's own (``probe`` for a classifier, ``label-words`` when
      prompting).
    - ``probe``: fit the new head as a logistic-regression probe on frozen features first; the
      advice then points at what the labels need, not at a random head's directions (4,000
      examples raised the chosen rows' overlap across seeds from 0.29 to 0.42 on vader-movie).
    - ``random``: keep the seeded random init: the [LIN] setting, cheaper (no probe features),
      and less stable across seeds.
    - ``label-words``: the label words' LM-head rows (prompting a decoder LM).
    """

    AUTO = "auto"
    PROBE = "probe"
    RANDOM = "random"
    LABEL_WORDS = "label-words"


class Route(Choice):
    """How the profile computes kernels.

    - ``structured`` (default): one forward and C backward passes capture every module's
      inputs and output gradients; contractions pick per module between token Grams and
      per-example gradients. 14–26× faster than the reference on minilm-l6.
    - ``jacobian``: ``vmap(jacrev)`` per module, the brute-force reference; use it to check a
      result, never for speed.
    """

    STRUCTURED = "structured"
    JACOBIAN = "jacobian"


class WeightDtype(Choice):
    """The model's weights while profiling. Captured activations and gradients are contracted
    in float32 for half-precision weights and in the weights' dtype otherwise; blocks are
    summed into float64 kernels either way (ntk/contractions.accumulation_dtype).

    - ``float32`` (default): what training uses.
    - ``float64``: when a float32 profile overflows (the profile says so), or for oracles.
    - ``bfloat16`` / ``float16``: half the memory of the model and its captures, for large
      models on GPUs; the forward and backward passes round to 8 (bf16) or 11 (fp16)
      significant bits. docs/profile.md gives the measured agreement with float32.
    """

    FLOAT32 = "float32"
    FLOAT64 = "float64"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"


class Objective(Choice):
    """What the greedy search maximizes per parameter over a placement's kernel K_S.

    - ``trace`` (default): tr K_S, the kernel's energy. It ranked placements positively in all
      three validate studies (Spearman 0.29, 0.84, 0.16) and is the cheapest search.
    - ``alignment``: kernel-target alignment ỹᵀK_Sỹ / (‖K_S‖_F ‖ỹ‖²); ranked placements
      negatively in the same studies.
    - ``loo``: minus the leave-one-out kernel-ridge squared residual on the probe sample; the
      most direct prediction of fit, and among the slowest.
    - ``lambda_min``: the smallest eigenvalue of K_S + λI, the slowest-converging direction.
    - ``condition``: −κ(K_S + λI), for well-conditioned placements.
    """

    ALIGNMENT = "alignment"
    LOO = "loo"
    LAMBDA_MIN = "lambda_min"
    CONDITION = "condition"
    TRACE = "trace"


class Allocation(Choice):
    """How a RoCoFT budget is spread over modules before the objective spends the rest.

    - ``default``: the method's own default (``Method.default_allocation``): for RoCoFT the
      rule the transfer suite chose on its validation split (docs/suite.md), for LoRA
      ``greedy``.
    - ``greedy``: one best-aligned row in every module, then the objective. Coverage
      across layers mattered in the first premise check (docs/method.md §11). For LoRA: ranks
      by the label gradient's spectrum, when the profile has it.
    - ``uniform``: rounds of one row per module (each module's next best-aligned) until the
      budget is spent; the safest spread.
    - ``signal``: one best-aligned row in every module, then each next row by label-gradient
      score per weight; a module's rows are taken best first, so returns diminish. For LoRA:
      rank 1 on every module (lora-all's spread), then ranks by the spectrum.
    - ``free``: the objective alone; it can pile the budget into a few modules.
    """

    DEFAULT = "default"
    GREEDY = "greedy"
    UNIFORM = "uniform"
    SIGNAL = "signal"
    FREE = "free"


class Axis(Choice):
    """RoCoFT's unit: ``rows`` (output units W[i, :], the default) or ``cols`` (input features W[:, j])."""

    ROWS = "rows"
    COLS = "cols"


class ModuleGroup(Choice):
    """Which modules the advised search may place the budget in (the baselines keep their own).

    - ``all`` (default): every block Linear the profile measured.
    - ``attention``: query, key, value (or a fused qkv) and the attention output.
    - ``ffn``: the feed-forward modules only, the set of ``lora-mlp``; pick it when you want
      lora-mlp's modules with ranks (or rows) placed by the profile (docs/suite.md,
      "Advice within the FFN modules").
    """

    ALL = "all"
    ATTENTION = "attention"
    FFN = "ffn"

    @classmethod
    def roles(cls, group: str) -> frozenset[str] | None:
        """The module roles (inputs.models) a group holds; None for every module."""
        return {"all": None, "attention": frozenset({"query", "key", "value", "qkv", "attention-out"}),
                "ffn": frozenset({"ffn-in", "ffn-out"})}[group]
