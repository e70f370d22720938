"""Artifacts passed between stages, and their folder formats (save_* / load_*).

Profile folder (format version 1), see README "Profile folder":
    profile.json         settings, versions, timing, per-module summaries, total spectrum
    kernels.safetensors  kernel/<module>, kernel/total (float64 N×N), rows/<module>,
                         cols/<module> (energies), rows_alignment/<module>,
                         cols_alignment/<module>, rows_signal/<module>, cols_signal/<module>,
                         signal_spectrum/<module> (label-gradient scores over M examples; absent with
                         --signal-samples 0), inputs/{input_ids,attention_mask,labels}
    head.safetensors     weights the checkpoint did not provide (head, pooler), when any

Folders are written under a temporary name beside the target and renamed when complete, so
a crash never leaves a half-written profile where a later command would read it (_io.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .._io import json_restore, json_safe, write_folder_atomically
from ..errors import OutputError, ProfileError

PROFILE_FORMAT = 1
PROFILE_FILES = ("profile.json", "kernels.safetensors", "head.safetensors")
_SCORE_GROUPS = ("rows", "cols", "rows_alignment", "cols_alignment", "rows_signal", "cols_signal",
                 "signal_spectrum")


@dataclass
class ModuleSummary:
    name: str
    role: str
    layer: int | None
    d_out: int
    d_in: int
    num_weights: int
    route: str
    trace: float
    lambda_max: float
    lambda_min: float
    condition_number: float
    stable_rank: float
    effective_rank: float
    alignment: float
    loo_accuracy: float


@dataclass
class NtkProfile:
    settings: dict
    modules: list[ModuleSummary]
    total: dict  # spectral summary of the total kernel, plus "spectrum" (ascending eigenvalues)
    kernels: dict[str, torch.Tensor]  # module -> (R, R) float64; "total" included
    scores: dict[str, dict[str, torch.Tensor]]  # group (rows, cols, ...) -> module -> vector
    inputs: dict[str, torch.Tensor]  # input_ids, attention_mask, labels
    head: dict[str, torch.Tensor] = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    head_report: dict = field(default_factory=dict)


REPLACEABLE_PROFILE = {"marker": "profile.json", "entries": PROFILE_FILES, "what": "profile"}


def check_profile_destination(out: Path, force: bool) -> None:
    """Refuse a profile --out before the minutes of computation, not after them."""
    from .._io import check_replaceable, check_writable_destination

    out = Path(out)
    if out.exists() and not force:
        raise OutputError(f"output folder '{out}' already exists: choose another --out or pass --force")
    if out.exists():
        check_replaceable(out, **REPLACEABLE_PROFILE)
    check_writable_destination(out, is_folder=True)


def save_profile(profile: NtkProfile, out: Path, force: bool = False) -> Path:
    def write(folder: Path):
        tensors = {f"kernel/{k}": v.contiguous() for k, v in profile.kernels.items()}
        for group, by_module in profile.scores.items():
            tensors.update({f"{group}/{k}": v.contiguous() for k, v in by_module.items()})
        tensors.update({f"inputs/{k}": v.contiguous() for k, v in profile.inputs.items()})
        save_file(tensors, str(folder / "kernels.safetensors"))
        if profile.head:
            save_file({k: v.contiguous() for k, v in profile.head.items()}, str(folder / "head.safetensors"))
        document = {
            "format": PROFILE_FORMAT,
            "settings": profile.settings,
            "versions": profile.versions,
            "timing": profile.timing,
            "head": profile.head_report,
            "warnings": profile.warnings,
            "total": profile.total,
            "modules": [m.__dict__ for m in profile.modules],
        }
        (folder / "profile.json").write_text(json.dumps(json_safe(document), indent=2) + "\n")

    return write_folder_atomically(Path(out), write, force, **REPLACEABLE_PROFILE)


def load_profile(folder: Path) -> NtkProfile:
    from .._io import refuse_links

    folder = Path(folder)
    meta_path, tensor_path = folder / "profile.json", folder / "kernels.safetensors"
    refuse_links(folder, "profile", ProfileError)
    if not meta_path.exists() or not tensor_path.exists():
        raise ProfileError(f"'{folder}' is not a profile folder (needs profile.json and kernels.safetensors): "
                           "create one with ntk-advisor profile --out DIR")
    try:
        document = json_restore(json.loads(meta_path.read_text()))
        tensors = load_file(str(tensor_path))
    except Exception as exc:  # noqa: BLE001 - json, OSError and safetensors' own SafetensorError
        raise ProfileError(f"profile folder '{folder}' is corrupt ({_first_line(exc)}); recompute it "
                           "with ntk-advisor profile") from None
    if not isinstance(document, dict) or document.get("format") != PROFILE_FORMAT:
        found = document.get("format") if isinstance(document, dict) else None
        raise ProfileError(f"profile format {found} is not supported (this ntk-advisor reads "
                           f"format {PROFILE_FORMAT}); recompute it with this version")
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        group, _, name = key.partition("/")
        grouped.setdefault(group, {})[name] = value
    head_path = folder / "head.safetensors"
    try:
        return NtkProfile(
            settings=document["settings"],
            modules=[ModuleSummary(**m) for m in document["modules"]],
            total=document["total"],
            kernels=grouped.get("kernel", {}),
            scores={g: grouped.get(g, {}) for g in _SCORE_GROUPS},
            inputs=grouped.get("inputs", {}),
            head=load_file(str(head_path)) if head_path.exists() else {},
            versions=document.get("versions", {}),
            timing=document.get("timing", {}),
            warnings=document.get("warnings", []),
            head_report=document.get("head", {}),
        )
    except KeyError as exc:
        raise ProfileError(f"profile folder '{folder}' is incomplete (profile.json lacks {exc}); recompute it with "
                           "ntk-advisor profile") from None
    except Exception as exc:  # noqa: BLE001 - a torn head.safetensors, a module summary of another shape
        raise ProfileError(f"profile folder '{folder}' is corrupt ({_first_line(exc)}); recompute it "
                           "with ntk-advisor profile") from None


def _first_line(exc: Exception) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0][:120]
