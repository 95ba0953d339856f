"""A split's parts as rows and targets: what the split step makes and what runs log and read back."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

PARTS = ("train", "val", "test")


@dataclass
class Part:
    x: pd.DataFrame | np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


def class_balance(y: np.ndarray) -> dict[str, int]:
    """Rows per class, keyed by the label as text (JSON keys)."""
    labels, counts = np.unique(y, return_counts=True)
    return {str(label): int(count) for label, count in zip(labels, counts)}
