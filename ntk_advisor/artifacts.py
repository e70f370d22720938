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
a crash never leaves a half-written profile where a later command would read it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .errors import ProfileError

PROFILE_FORMAT = 1
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


def json_safe(value):
    """inf/NaN are not JSON: write them as strings a person (and load_profile) can read."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def json_restore(value):
    """The inverse of json_safe: 'inf', '-inf' and 'nan' strings become floats again."""
    if value in ("inf", "-inf", "nan"):
        return float(value)
    if isinstance(value, dict):
        return {k: json_restore(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_restore(v) for v in value]
    return value


def write_text_atomically(path: Path, text: str) -> None:
    """A temp file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_json(path: Path):
    """A JSON file written with json_safe, with its non-finite floats restored."""
    return json_restore(json.loads(Path(path).read_text()))


def write_folder_atomically(target: Path, write, force: bool = False) -> Path:
    """Call write(tmp_folder), then move the finished folder to ``target``.

    An existing target is refused unless ``force``; with force it is replaced only after the
    new folder is complete.
    """
    target = Path(target)
    if target.exists() and not force:
        raise ProfileError(f"output folder '{target}' already exists: choose another --out or pass --force")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write(tmp)
        _share_like_a_normal_folder(tmp)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "x")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _share_like_a_normal_folder(folder: Path) -> None:
    """mkdtemp makes 0700 folders (and some writers 0600 files); give the result umask modes."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


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

    return write_folder_atomically(Path(out), write, force)


def load_profile(folder: Path) -> NtkProfile:
    folder = Path(folder)
    meta_path, tensor_path = folder / "profile.json", folder / "kernels.safetensors"
    if not meta_path.exists() or not tensor_path.exists():
        raise ProfileError(f"'{folder}' is not a profile folder (needs profile.json and kernels.safetensors): "
                           "create one with ntk-advisor profile --out DIR")
    try:
        document = json_restore(json.loads(meta_path.read_text()))
        tensors = load_file(str(tensor_path))
    except (ValueError, OSError) as exc:
        raise ProfileError(f"profile folder '{folder}' is corrupt ({exc}); recompute it with ntk-advisor profile") from None
    if document.get("format") != PROFILE_FORMAT:
        raise ProfileError(f"profile format {document.get('format')} is not supported (this ntk-advisor reads "
                           f"format {PROFILE_FORMAT}); recompute it with this version")
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        group, _, name = key.partition("/")
        grouped.setdefault(group, {})[name] = value
    head_path = folder / "head.safetensors"
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
