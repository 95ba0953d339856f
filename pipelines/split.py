"""Split data into train, validation and test parts (stratified for classes, seeded)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.data import Dataset
from pipelines.errors import FittrackError
from pipelines.params import DataParams
from tracking.fields import check_fields, param_like
from tracking.parts import PARTS, Part


@dataclass
class SplitConfig:
    val_fraction: float = param_like(DataParams, "val_fraction")
    test_fraction: float = param_like(DataParams, "test_fraction")
    seed: int = param_like(DataParams, "seed")

    def __post_init__(self):
        check_fields(self)
        total = self.val_fraction + self.test_fraction
        if total >= 1.0:
            raise FittrackError(f"val_fraction + test_fraction must be below 1 to leave training rows, got "
                                f"{self.val_fraction!r} + {self.test_fraction!r} = {total:g}")


def split(config: SplitConfig, data: Dataset) -> dict[str, Part]:
    """Return {"train", "val", "test"} parts; the test part is meant to be touched once."""
    from sklearn.model_selection import train_test_split

    n = len(data)
    if n == 0:
        raise FittrackError(f"{data.source!r} has no rows to split")
    sizes = _part_sizes(n, config)
    for part, size in sizes.items():
        if size < 1:
            raise FittrackError(
                f"the {part} split would be empty: {n} rows with val_fraction={config.val_fraction} "
                f"and test_fraction={config.test_fraction}"
            )
    stratify = data.task == "classification"
    if stratify:
        _check_stratifiable(data.y, sizes)
    index = np.arange(n)
    try:
        rest, test = train_test_split(
            index, test_size=sizes["test"], random_state=config.seed,
            stratify=data.y if stratify else None,
        )
        train, val = train_test_split(
            rest, test_size=sizes["val"], random_state=config.seed,
            stratify=data.y[rest] if stratify else None,
        )
    except ValueError as exc:
        raise FittrackError(f"cannot split {n} rows as asked: {exc}") from exc
    return {name: _take(data, idx) for name, idx in zip(PARTS, (train, val, test))}


def _part_sizes(n: int, config: SplitConfig) -> dict[str, int]:
    test = int(round(n * config.test_fraction))
    val = int(round(n * config.val_fraction))
    return {"train": n - test - val, "val": val, "test": test}


def _check_stratifiable(y: np.ndarray, sizes: dict[str, int]) -> None:
    labels, counts = np.unique(y, return_counts=True)
    smallest = int(np.argmin(counts))
    if counts[smallest] < len(PARTS):
        raise FittrackError(
            f"class {str(labels[smallest])!r} has only {counts[smallest]} row(s); a stratified "
            f"train/validation/test split needs at least {len(PARTS)} rows of every class"
        )
    for part, size in sizes.items():
        if size < len(labels):
            raise FittrackError(
                f"the {part} split would hold {size} rows, fewer than the {len(labels)} classes; "
                f"raise its fraction or use more data"
            )


def _take(data: Dataset, idx: np.ndarray) -> Part:
    idx = np.sort(idx)
    x = data.x.iloc[idx].reset_index(drop=True) if isinstance(data.x, pd.DataFrame) else data.x[idx]
    return Part(x=x, y=data.y[idx])
