"""Labelled text data from a builtin name (builtins.py) or a user file, with splits and probe
samples (dataset.py). User files go through the same label handling so that a profile on a
CSV means the same thing as one on a builtin. Heavy readers (pyarrow, datasets)
are imported only when such a file is given, so ``ntk-advisor data list`` stays instant.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError
from .builtins import BUILTIN_DATASETS, load_builtin
from .dataset import Splits, TextDataset, probe_sample, split_dataset  # noqa: F401 - the data API in one place

log = logging.getLogger(__name__)

FILE_KINDS = (".csv", ".tsv", ".jsonl", ".json", ".parquet")

_INT = re.compile(r"[+-]?\d+")
_FRACTION = re.compile(r"[+-]?\d*\.\d*[1-9]\d*([eE][+-]?\d+)?")  # 0.5, -.25, 3.10; not 1.0


# ----------------------------------------------------------------------------- entry point
def load_dataset(source: str, text_column: str = "text", label_column: str = "label") -> TextDataset:
    """A builtin name wins over a same-named file; anything else must be an existing path."""
    source = os.fspath(source)
    if source in BUILTIN_DATASETS:
        return load_builtin(source)
    rows, columns, class_names = read_records(source, f"records with '{text_column}' and '{label_column}'")
    return _build(source, rows, columns, text_column, label_column, class_names.get(label_column))


def read_records(source: str, wanted: str = "one record per example") -> tuple[Rows, list[str], dict]:
    """(rows, columns, class names of label columns) of a data file or Hugging Face datasets
    folder; ``wanted`` says in the empty-file message what the records should hold."""
    path = Path(source).expanduser()
    if not path.exists():
        if os.sep in source or "/" in source or path.suffix:
            raise DataError(f"data file {source} does not exist; check the path")
        raise DataError(f"unknown data set '{source}'; use a builtin ({', '.join(BUILTIN_DATASETS)}) "
                        f"or the path of a {'/'.join(FILE_KINDS)} file or a Hugging Face datasets folder")
    if path.is_dir():
        return _read_hf_folder(source, path)
    suffix = path.suffix.lower()
    if suffix not in FILE_KINDS:
        raise DataError(f"{source}: {'unknown file type ' + repr(path.suffix) if path.suffix else 'no file extension'}; "
                        f"use one of {', '.join(FILE_KINDS)} or a Hugging Face datasets folder")
    if suffix == ".parquet":
        return (*_read_parquet(source, path), {})
    text = _read_utf8(source, path)
    if not text.strip():
        raise DataError(f"{source} is empty; give {wanted}")
    if suffix in (".csv", ".tsv"):
        return (*_read_delimited(source, text, "\t" if suffix == ".tsv" else ","), {})
    return (*_read_json_records(source, text), {})


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
    """Rows keyed by the header, each located by the line it starts on (cells may span lines)."""
    old_limit = csv.field_size_limit()
    csv.field_size_limit(max(old_limit, 1 << 30))  # whole documents in one cell pass the 128 KiB default
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows, columns, starts_at = [], None, 1
    try:
        for cells in reader:
            if not cells:  # a blank line
                starts_at = reader.line_num + 1
                continue
            if columns is None:
                columns = [c.strip() for c in cells]
                repeated = sorted({c for c in columns if columns.count(c) > 1})
                if repeated:
                    raise DataError(f"{source}: the header names column '{repeated[0]}' twice; rename one of them")
            else:
                if reader.line_num > starts_at and len(cells) < len(columns):
                    # A record spanning lines that still lacks fields: a quote opened on its first
                    # line swallowed the rest of the file.
                    raise DataError(f"{source}: line {starts_at} opens a quote that is never closed (the record "
                                    f"runs to line {reader.line_num}); close the quote or re-export the file")
                rows.append((f"line {starts_at}", dict(zip(columns, cells))))
            starts_at = reader.line_num + 1
    except csv.Error as e:
        raise DataError(f"{source}: cannot parse the record that starts at line {starts_at} ({e}); "
                        "fix or re-export the file") from None
    finally:
        csv.field_size_limit(old_limit)
    return rows, columns or []


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
    if text_column == label_column:
        raise DataError(f"{source}: '{text_column}' is given as both the text and the label column; "
                        "choose different ones with --text-column/--label-column")
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
            if _FRACTION.fullmatch(value.strip()):  # "0.5" in a CSV is a score, not a class name
                raise DataError(f"{source}: {where} has label {value.strip()!r} in '{label_column}', which is not a "
                                "class; labels must be class names or integers (bin scores into classes first)")
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


