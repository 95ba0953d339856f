"""Data sources: scikit-learn's builtin sets, CSV, Parquet and NPZ files."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.errors import FittrackError

BUILTIN_PREFIX = "builtin:"
BUILTINS = ("digits", "breast_cancer", "wine", "iris", "diabetes")
FILE_TYPES = (".csv", ".parquet", ".pq", ".npz")
TASKS = ("auto", "classification", "regression")
# An integer target with at most this many distinct values is taken for classes.
MAX_AUTO_CLASSES = 20


@dataclass
class Dataset:
    """Features and target as the source had them.

    `x` is a DataFrame for tabular data and an array N x H x W [x C] for images.
    """

    x: pd.DataFrame | np.ndarray
    y: np.ndarray
    target: str
    task: str
    kind: str  # "tabular" or "image"
    source: str
    digest: str

    def __len__(self) -> int:
        return len(self.y)


def load(data: str, target: str = "target", task: str = "auto") -> Dataset:
    """Load `data` (builtin:NAME or a file path) and check the target."""
    if task not in TASKS:
        raise FittrackError(f"unknown task '{task}'; choose one of {', '.join(TASKS)}")
    if data.startswith(BUILTIN_PREFIX):
        x, y, kind, known_task = _load_builtin(data[len(BUILTIN_PREFIX):])
        target = "target"
        source = data
    else:
        x, y, kind = _load_file(data, target)
        known_task = None
        source = os.path.abspath(data)
    y = np.asarray(y)
    _check_target(y, target)
    if known_task is not None and task == "auto":
        task = known_task
    elif task == "auto":
        task = infer_task(y)
    if task == "regression" and not np.issubdtype(y.dtype, np.number):
        raise FittrackError(
            f"task 'regression' needs a numeric target, but column '{target}' holds {y.dtype} values"
        )
    return Dataset(x=x, y=y, target=target, task=task, kind=kind, source=source, digest=digest_of(x, y))


def data_name(source: str) -> str:
    """A short name for a data source: `digits` for builtin:digits, the file's stem otherwise."""
    if source.startswith(BUILTIN_PREFIX):
        return source[len(BUILTIN_PREFIX):]
    return os.path.splitext(os.path.basename(source))[0]


def infer_task(y: np.ndarray) -> str:
    if not np.issubdtype(y.dtype, np.number) or y.dtype == bool:
        return "classification"
    if np.issubdtype(y.dtype, np.floating) and not np.all(np.mod(y, 1) == 0):
        return "regression"
    return "classification" if len(np.unique(y)) <= MAX_AUTO_CLASSES else "regression"


def digest_of(x, y) -> str:
    """A content digest, so that a split is reused only for the very same data."""
    h = hashlib.sha256()
    if isinstance(x, pd.DataFrame):
        h.update(",".join(map(str, x.columns)).encode())
        h.update(pd.util.hash_pandas_object(x, index=False).values.tobytes())
    else:
        h.update(str(x.shape).encode())
        h.update(np.ascontiguousarray(x).tobytes())
    h.update(pd.util.hash_pandas_object(pd.Series(y), index=False).values.tobytes())
    return h.hexdigest()[:16]


def _load_builtin(name: str):
    from sklearn import datasets

    if name not in BUILTINS:
        accepted = ", ".join(BUILTIN_PREFIX + b for b in BUILTINS)
        raise FittrackError(f"unknown builtin data set '{BUILTIN_PREFIX}{name}'; choose one of {accepted}")
    if name == "digits":
        bunch = datasets.load_digits()
        return bunch.images, bunch.target, "image", "classification"
    loader = getattr(datasets, f"load_{name}")
    bunch = loader(as_frame=True)
    task = "regression" if name == "diabetes" else "classification"
    return bunch.data, bunch.target.to_numpy(), "tabular", task


def _load_file(path: str, target: str):
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in FILE_TYPES:
        raise FittrackError(
            f"unsupported data file type '{suffix or path}'; use a CSV (.csv), Parquet (.parquet) "
            f"or NPZ (.npz) file, or builtin:NAME"
        )
    if not os.path.isfile(path):
        raise FittrackError(f"data file not found: '{path}'")
    if suffix == ".npz":
        return _load_npz(path)
    try:
        frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    except Exception as exc:  # pandas raises many types for unreadable files
        raise FittrackError(f"cannot read data file '{path}': {exc}".splitlines()[0]) from exc
    if target not in frame.columns:
        columns = ", ".join(map(str, frame.columns[:20]))
        raise FittrackError(f"target column '{target}' is not in '{path}'; its columns are: {columns}")
    return frame.drop(columns=[target]), frame[target].to_numpy(), "tabular"


def _load_npz(path: str):
    try:
        arrays = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise FittrackError(f"cannot read NPZ file '{path}': {exc}".splitlines()[0]) from exc
    missing = [k for k in ("x", "y") if k not in arrays.files]
    if missing:
        raise FittrackError(
            f"NPZ file '{path}' has no array {' or '.join(repr(m) for m in missing)}; "
            f"it needs arrays 'x' and 'y' (it has: {', '.join(arrays.files) or 'none'})"
        )
    x, y = arrays["x"], arrays["y"]
    if len(x) != len(y):
        raise FittrackError(f"NPZ file '{path}': 'x' has {len(x)} rows but 'y' has {len(y)}")
    if x.ndim == 2:
        return pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])]), y, "tabular"
    if x.ndim in (3, 4):
        return x, y, "image"
    raise FittrackError(
        f"NPZ file '{path}': 'x' has shape {x.shape}; expected N x features or N x H x W [x C] images"
    )


def _check_target(y: np.ndarray, target: str) -> None:
    missing = pd.isna(pd.Series(y))
    if missing.any():
        rows = ", ".join(map(str, np.flatnonzero(missing.to_numpy())[:5]))
        raise FittrackError(
            f"target column '{target}' has {int(missing.sum())} missing values (rows {rows}...); "
            f"drop or fill them first"
        )
