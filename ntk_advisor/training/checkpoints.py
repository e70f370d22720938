"""Run folders and checkpoints: what `train` may delete, and states that load without running code."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import torch

from .._io import check_replaceable, refuse_links, write_atomically
from ..errors import TrainError

CHECKPOINTS = "checkpoints"
RUN_ENTRIES = ("checkpoints", "adapter", "metrics.json", "recipe.yaml")  # all that train writes in --out


def save_checkpoint(state: dict, path: Path) -> None:
    write_atomically(path, lambda tmp: torch.save(state, tmp))


def _load_checkpoint(path: Path) -> dict | None:
    """A checkpoint's state, or None for a torn or unreadable file.

    Loaded with weights_only=True: tensors and plain data only, so a crafted file can never
    run code; such a file is refused by name instead of being skipped in silence.
    """
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower():
            raise TrainError(f"'{path}' is not a checkpoint of this tool (it asks to build objects or run code "
                             "when loaded): delete it, or start over with --force") from None
        return None
    except Exception:  # noqa: BLE001 - a torn zip, a truncated file: simply not a checkpoint
        return None
    return state if isinstance(state, dict) and state.get("complete") else None


def latest_checkpoint(folder: Path) -> tuple[dict | None, Path | None]:
    """The newest checkpoint that loads; a torn or corrupt file is skipped, never picked up."""
    candidates = sorted((folder / CHECKPOINTS).glob("step-*.pt"), key=_step_number, reverse=True)
    for path in candidates:
        state = _load_checkpoint(path)
        if state is not None:
            return state, path
    return None, None


def _step_number(path: Path) -> int:
    number = path.stem.partition("-")[2]
    return int(number) if number.isdigit() else -1


def prepare_out(out: Path, resume: bool, force: bool, protect: tuple = ()) -> dict | None:
    if out.exists() and not out.is_dir():
        raise TrainError(f"--out '{out}' is a file, not a folder: choose another --out")
    if out.exists() and any(out.iterdir()):
        refuse_links(out, "run", TrainError)
        if resume:
            state, _ = latest_checkpoint(out)
            if state is None:
                raise TrainError(f"'{out}' has no complete checkpoint to resume from: drop --resume or pass --force")
            return state
        if not force:
            raise TrainError(f"output folder '{out}' already holds files (another run?): pass --resume to continue "
                             "it, --force to start over, or choose another --out")
        check_replaceable(out, entries=RUN_ENTRIES, protect=protect, what="run")
        for name in RUN_ENTRIES:  # only what a run writes: the check above saw nothing else
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    elif resume:
        raise TrainError(f"nothing to resume in '{out}': run without --resume first")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrainError(f"cannot create --out '{out}' ({exc.strerror}): choose a folder you can write") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise TrainError(f"--out '{out}' is not writable: choose a folder you can write")
    return None


def prune_checkpoints(folder: Path, keep: int = 2) -> None:
    """Keep the ``keep`` newest: a torn newest file still leaves one to resume from."""
    for old in sorted((folder / CHECKPOINTS).glob("step-*.pt"), key=_step_number)[:-keep]:
        old.unlink(missing_ok=True)
