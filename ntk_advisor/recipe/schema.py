"""The recipe: a strict, versioned pydantic schema (files: recipe/io.py; other tools' keys:
recipe/conversions.py).

A recipe is data: every model forbids unknown keys, and nothing in it names code to import.
Which keys a target needs is the method's to say (methods/base.py), checked when a recipe
is parsed.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # .inf trains a NaN adapter


class ModelSpec(_Strict):
    name: str = Field(description="Model alias, local Hugging Face folder, or hub id.")
    num_labels: Annotated[int, Field(ge=2)] = 2
    task: str = Field(
        "classifier", description="A registered task: classifier (a new head on pooled features), label-words "
                                  "(prompting a decoder LM) or sft (supervised fine-tuning of a causal LM on "
                                  "completions; its recipes leave out num_labels, head_init and the data's columns, which it does not read).")
    head_init: Literal["random", "probe"] = Field(
        "random", description="classifier: start the new head from its seeded random init, or from a logistic-"
                              "regression probe on frozen features, fitted as `profile --head probe` fits its head (on the "
                              "recipe's training split; the profile also leaves its probe sample out).")



class DataSpec(_Strict):
    source: str = Field(description="Builtin data set name or a data file / folder.")
    text_column: str = "text"
    label_column: str = "label"
    seed: int = 0
    max_length: Annotated[int, Field(ge=1)] = 64
    template: str | None = Field(None, description="label-words: the prompt, with {text} where the text goes.")
    label_words: tuple[str, ...] | None = Field(None, description="label-words: one single-token word per class.")
    heldout_text: str | None = Field(None, description="sft: a data source the run does not train on (a builtin or "
                                     "a file with a text column); the NLL of its first texts at θ0 and after training "
                                     "measures forgetting.")


class Target(_Strict):
    """One targeted module: rows/columns (axis + indices), a rank, or the module alone; the
    recipe's method says which (methods/base.py)."""

    module: str
    axis: Literal["rows", "cols"] | None = None
    indices: tuple[Annotated[int, Field(ge=0)], ...] | None = None
    rank: Annotated[int, Field(ge=1)] | None = None
    score: float | None = None  # the evidence for this choice (objective gain per parameter)

    @model_validator(mode="after")
    def _one_kind(self):
        rocoft = self.axis is not None or self.indices is not None
        if rocoft and self.rank is not None:
            raise ValueError("a target is either RoCoFT (axis + indices) or LoRA (rank), not both")
        if rocoft and (self.axis is None or not self.indices):
            raise ValueError("a RoCoFT target needs both axis (rows|cols) and a non-empty indices list")
        if self.indices is not None and len(set(self.indices)) != len(self.indices):
            dup = sorted({i for i in self.indices if self.indices.count(i) > 1})
            raise ValueError(f"duplicate indices {dup[:5]}")
        return self


class Proximal(_Strict):
    strength: Annotated[float, Field(ge=0, alias="lambda")] = 0.0
    mode: Literal["plain", "selective"] = "selective"
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)


class Training(_Strict):
    learning_rate: Annotated[float, Field(gt=0)] = 2e-3
    epochs: Annotated[int, Field(ge=1)] = 3
    max_steps: Annotated[int, Field(ge=1)] | None = None
    batch_size: Annotated[int, Field(ge=1)] = 32
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.06
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    max_grad_norm: Annotated[float, Field(gt=0)] = 1.0
    seed: int = 0
    train_bias: Literal["none", "targets", "all"] = "none"
    train_head: bool = True
    early_stopping_patience: Annotated[int, Field(ge=0)] = 2
    checkpoint_every: Annotated[int, Field(ge=1)] = 100
    lora_alpha: Annotated[float, Field(gt=0)] | None = None  # None: α = r per module (scale 1)
    # PEFT's rank-stabilized scale α/√r (Kalajdzievski, 2023), α = lora_alpha or 1: a module's
    # kernel at θ0 is then r·(α²/r)·σ²·K_W, the same whatever its rank (docs/method.md §5)
    use_rslora: bool = False
    lora_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    # LoRA only: "eva" is PEFT's EVA (A from the SVD of each module's inputs on training
    # batches, ranks redistributed up to eva_rho x r; Paischer et al., 2024), a data-driven rival.
    # "loraga" is PEFT's LoRA-GA (A, B from the SVD of each module's gradient on training batches).
    lora_init: Literal["default", "eva", "loraga"] = "default"
    eva_rho: Annotated[float, Field(ge=1)] = 2.0


class Recipe(_Strict):
    schema_version: int = Field(description="Recipe format version; this ntk-advisor writes and reads 1.")
    model: ModelSpec
    data: DataSpec
    method: str = Field(description="A registered fine-tuning method: rocoft or lora (methods/).")
    targets: tuple[Target, ...] = Field(min_length=1)
    proximal: Proximal = Proximal()
    training: Training = Training()
    evidence: dict = Field(default_factory=dict)
    provenance: dict = Field(default_factory=dict, description="Versions, model-file and data sha256 the recipe "
                             "was made from (recipe/provenance.py); train warns where a run differs.")
    peft: dict | None = None
    axolotl: dict | None = None

    @field_validator("schema_version")
    @classmethod
    def _version(cls, value):
        if value != SCHEMA_VERSION:
            raise ValueError(f"schema_version {value} is not supported; this ntk-advisor reads {SCHEMA_VERSION}")
        return value

    @model_validator(mode="after")
    def _consistent(self):
        names = [t.module for t in self.targets]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise ValueError(f"module '{dup}' is targeted twice; merge its entries")
        return self
