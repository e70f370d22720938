"""A labelled text data set, its stratified splits and its probe samples (no file reading here)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..errors import DataError


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
