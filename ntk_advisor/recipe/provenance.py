"""What a recipe was made from, so a run elsewhere can say when it is not the same.

``provenance`` records the library versions that wrote the recipe, the sha256 of each weight
file of the model folder, and the sha256 of the data: of the file for a user file, of the
parsed examples (texts, labels, class names) for a builtin. ``differences`` compares a
recipe's record with what a run sees; ``train`` logs each difference as a warning and keeps
both records in metrics.json.
"""

from __future__ import annotations

import hashlib
import json
import logging
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)

PACKAGES = ("ntk-advisor", "torch", "transformers", "peft", "safetensors", "scikit-learn")
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.gguf")


def library_versions(packages=PACKAGES) -> dict[str, str]:
    versions = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "unknown"
    return versions


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def model_files(model: str) -> dict[str, str]:
    """sha256 of each weight file of the model's folder; empty for a hub id (nothing local)."""
    from ..inputs.models import resolve_model_source

    folder = Path(resolve_model_source(model))
    if not folder.is_dir():
        return {}
    found = sorted({p for pattern in WEIGHT_FILES for p in folder.glob(pattern)})
    return {p.name: file_sha256(p) for p in found}


def data_fingerprint(source: str, dataset) -> dict:
    """The data's sha256: the file's bytes, or the parsed examples of a builtin or a folder
    (a builtin name wins over a same-named file, as in load_dataset)."""
    from ..inputs.data import BUILTIN_DATASETS

    path = Path(source).expanduser()
    if source not in BUILTIN_DATASETS and path.is_file():
        return {"sha256": file_sha256(path), "of": "file", "examples": len(dataset)}
    parts = [list(dataset.texts), list(dataset.labels), list(dataset.label_names)]
    if getattr(dataset, "completions", None):  # SFT data: the completions are half of what trains
        parts.append(list(dataset.completions))
    content = json.dumps(parts, ensure_ascii=False)
    return {"sha256": hashlib.sha256(content.encode("utf-8")).hexdigest(), "of": "examples",
            "examples": len(dataset)}


def provenance(model: str, source: str, dataset) -> dict:
    return {"written_by": library_versions(), "model_files": model_files(model),
            "data": data_fingerprint(source, dataset)}


def differences(recorded: dict, current: dict) -> list[str]:
    """One line per way the run's model or data is not the recipe's (library versions only
    inform: a newer torch is no reason to refuse, but a user should know)."""
    found = []
    old_files, new_files = recorded.get("model_files") or {}, current.get("model_files") or {}
    for name in sorted(set(old_files) | set(new_files)) if old_files else ():  # nothing recorded: nothing to compare
        if old_files.get(name) != new_files.get(name):
            found.append(f"model file {name} is not the one the recipe was made for "
                         f"(sha256 {str(old_files.get(name))[:12]} in the recipe, {str(new_files.get(name))[:12]} here)")
    old_data, new_data = recorded.get("data") or {}, current.get("data") or {}
    if old_data.get("sha256") and old_data.get("sha256") != new_data.get("sha256"):
        found.append(f"the data is not the data the recipe was made for ({old_data.get('examples')} examples with "
                     f"sha256 {old_data['sha256'][:12]} in the recipe, {new_data.get('examples')} with "
                     f"{str(new_data.get('sha256'))[:12]} here)")
    old_versions, new_versions = recorded.get("written_by") or {}, current.get("written_by") or {}
    for package in ("torch", "transformers", "peft"):
        if old_versions.get(package) and old_versions.get(package) != new_versions.get(package):
            found.append(f"{package} {new_versions.get(package)} here, {old_versions[package]} wrote the recipe")
    return found


def check_provenance(recipe, dataset) -> dict:
    """The run's own record next to the recipe's; each difference is logged as a warning."""
    current = provenance(recipe.model.name, recipe.data.source, dataset)
    found = differences(recipe.provenance, current) if recipe.provenance else []
    for line in found:
        log.warning("%s", line)
    return {"recipe": recipe.provenance or None, "run": current, "differences": found}
