"""Data sources: scikit-learn's builtin sets, CSV, Parquet and NPZ files."""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipelines.errors import FittrackError
from pipelines.params import BUILTINS

BUILTIN_PREFIX = "builtin:"
FILE_TYPES = (".csv", ".parquet", ".pq", ".npz")
# An integer target with at most this many distinct values is taken for classes.
MAX_AUTO_CLASSES = 20
# A text column is taken for numbers with typos when at least this share of its values parse:
# below it, the strings are likely real categories that happen to include some numbers.
MIXED_NUMERIC_SHARE = 0.9


class MixedColumnWarning(UserWarning):
    """A column of numbers holds values that are not numbers."""


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
    # Columns of numbers whose strings became missing values (mixed_columns=numeric): raw rows
    # given to the model may still hold strings there.
    coerced: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.y)


def load(data: str, target: str = "target", task: str = "auto", mixed_columns: str = "numeric") -> Dataset:
    """Load `data` (builtin:NAME or a file path) and check the target.

    `mixed_columns` says what becomes of a column of numbers that holds a few strings (see
    pipelines.params.MIXED_COLUMNS); it is converted here, so every split part and model sees the same
    values. The arguments are checked where they are given, by pipelines.params.DataParams."""
    if data.startswith(BUILTIN_PREFIX):
        x, y, kind, known_task = _load_builtin(data[len(BUILTIN_PREFIX):])
        target = "target"
        source = data
    else:
        x, y, kind = _load_file(data, target)
        known_task = None
        source = os.path.abspath(data)
    where = _target_words(data, target)
    y = np.asarray(y)
    _check_target(y, target)
    if known_task is not None and task == "auto":
        task = known_task
    elif task == "auto":
        task = infer_task(y)
    if task == "regression" and not np.issubdtype(y.dtype, np.number):
        examples = _not_numbers(pd.Series(y))
        held = f"values that are not numbers: {_quoted(examples)}" if len(examples) else f"{y.dtype} values"
        raise FittrackError(
            f"task 'regression' needs a numeric target, but {where} holds {held}; "
            f"use a column of numbers, or task=classification"
        )
    if task == "classification":
        labels = pd.unique(pd.Series(y))
        if len(labels) < 2:
            raise FittrackError(
                f"{where} holds one class only ({str(labels[0])!r} in all {len(y)} rows); "
                f"classification needs at least two classes"
            )
    coerced = []
    if isinstance(x, pd.DataFrame):
        x, coerced = convert_mixed_columns(x, mixed_columns, data)
    return Dataset(x=x, y=y, target=target, task=task, kind=kind, source=source, digest=digest_of(x, y),
                   coerced=coerced)


def mixed_columns_of(x: pd.DataFrame) -> dict[str, pd.Series]:
    """{column: its values that are not numbers} for each text column that is mostly numbers."""
    found = {}
    for column in x.columns:
        values = x[column]
        if (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)
                or isinstance(values.dtype, pd.CategoricalDtype)
                or not (pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values))):
            continue
        present = values.dropna()
        if present.empty:
            continue
        strings = _not_numbers(present)
        if len(strings) and 1.0 - len(strings) / len(present) >= MIXED_NUMERIC_SHARE:
            found[column] = strings
    return found


def convert_mixed_columns(x: pd.DataFrame, mixed_columns: str, source: str) -> tuple[pd.DataFrame, list[str]]:
    """Warn about (or stop at) columns of numbers holding strings; make them numbers if asked.

    Returns the rows and the columns made numbers."""
    found = mixed_columns_of(x)
    if not found:
        return x, []
    for column, strings in found.items():
        described = (f"column {column!r} of {source!r} is numeric except for {len(strings)} "
                     f"value{'s' if len(strings) != 1 else ''}: {_quoted(strings)}")
        if mixed_columns == "error":
            raise FittrackError(f"{described}; fix them, or pass mixed_columns=numeric (they become missing "
                                f"values) or mixed_columns=categorical")
        outcome = ("they become missing values, imputed like any missing number (mixed_columns=numeric)"
                   if mixed_columns == "numeric" else
                   "the column stays categorical, one category per distinct value (mixed_columns=categorical)")
        warnings.warn(f"{described}; {outcome}", MixedColumnWarning, stacklevel=2)
    if mixed_columns == "categorical":
        return x, []
    from tracking.features import numeric_as_numbers  # as the served model reads such columns too

    return numeric_as_numbers(x, list(found)), list(found)


def _target_words(data: str, target: str) -> str:
    """How messages name the target: its column and file (NPZ files: their array 'y')."""
    if data.startswith(BUILTIN_PREFIX):
        return f"target column 'target' of {data}"
    if data.lower().endswith(".npz"):
        return f"target array 'y' of {data!r}"
    return f"target column {target!r} of {data!r}"


def _not_numbers(values: pd.Series) -> pd.Series:
    present = values.dropna()
    return present[pd.to_numeric(present, errors="coerce").isna()]


def _quoted(values: pd.Series, limit: int = 5) -> str:
    """Up to `limit` distinct values, quoted, with '...' when there are more."""
    distinct = list(dict.fromkeys(map(str, values)))
    shown = ", ".join(f"'{v}'" for v in distinct[:limit])
    return shown + (", ..." if len(distinct) > limit else "")


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
        raise FittrackError(f"unknown builtin data set {BUILTIN_PREFIX + name!r}; choose one of {accepted}")
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
            f"unsupported data file type {suffix or path!r}; use a CSV (.csv), Parquet (.parquet) "
            f"or NPZ (.npz) file, or builtin:NAME"
        )
    if not os.path.isfile(path):
        raise FittrackError(f"data file not found: {path!r}")
    if suffix == ".npz":
        return _load_npz(path)
    try:
        frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    except pd.errors.EmptyDataError as exc:
        raise FittrackError(f"data file {path!r} is empty: no header, no rows") from exc
    except Exception as exc:  # pandas raises many types for unreadable files
        raise FittrackError(f"cannot read data file {path!r}: {exc}".splitlines()[0]) from exc
    if len(frame) == 0:
        # An empty split would otherwise be blamed on val_fraction and test_fraction.
        columns = ", ".join(map(str, frame.columns[:20]))
        raise FittrackError(f"data file {path!r} has no rows" + (f" (its columns: {columns})" if columns else ""))
    if target not in frame.columns:
        columns = ", ".join(map(str, frame.columns[:20]))
        raise FittrackError(f"target column {target!r} is not in {path!r}; its columns are: {columns}")
    return frame.drop(columns=[target]), frame[target].to_numpy(), "tabular"


def _load_npz(path: str):
    try:
        arrays = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise FittrackError(f"cannot read NPZ file {path!r}: {exc}".splitlines()[0]) from exc
    missing = [k for k in ("x", "y") if k not in arrays.files]
    if missing:
        raise FittrackError(
            f"NPZ file {path!r} has no array {' or '.join(repr(m) for m in missing)}; "
            f"it needs arrays 'x' and 'y' (it has: {', '.join(arrays.files) or 'none'})"
        )
    x, y = arrays["x"], arrays["y"]
    if len(x) == 0 and len(y) == 0:
        raise FittrackError(f"NPZ file {path!r} has no rows ('x' has shape {x.shape})")
    if len(x) != len(y):
        raise FittrackError(f"NPZ file {path!r}: 'x' has {len(x)} rows but 'y' has {len(y)}")
    if x.ndim == 2:
        return pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])]), y, "tabular"
    if x.ndim in (3, 4):
        return x, y, "image"
    raise FittrackError(
        f"NPZ file {path!r}: 'x' has shape {x.shape}; expected N x features or N x H x W [x C] images"
    )


def _check_target(y: np.ndarray, target: str) -> None:
    missing = pd.isna(pd.Series(y))
    if missing.any():
        rows = ", ".join(map(str, np.flatnonzero(missing.to_numpy())[:5]))
        raise FittrackError(
            f"target column {target!r} has {int(missing.sum())} missing values (rows {rows}...); "
            f"drop or fill them first"
        )
