import numpy as np
import pandas as pd
import pytest

from pipelines import data
from pipelines.errors import FittrackError


@pytest.mark.parametrize("name, kind, task, classes", [
    ("digits", "image", "classification", 10),
    ("breast_cancer", "tabular", "classification", 2),
    ("wine", "tabular", "classification", 3),
    ("iris", "tabular", "classification", 3),
    ("diabetes", "tabular", "regression", None),
])
def test_builtin_sets(name, kind, task, classes):
    ds = data.load(f"builtin:{name}")
    assert (ds.kind, ds.task) == (kind, task)
    assert len(ds.x) == len(ds.y) > 100
    if classes:
        assert len(np.unique(ds.y)) == classes
    if kind == "image":
        assert ds.x.shape[1:] == (8, 8)


def test_csv_with_categorical_and_missing_values(tmp_path):
    frame = pd.DataFrame({
        "size": [1.0, np.nan, 3.0, 4.0, 5.0, 6.0],
        "colour": ["red", "blue", None, "red", "blue", "red"],
        "label": ["a", "b", "a", "b", "a", "b"],
    })
    path = tmp_path / "rows.csv"
    frame.to_csv(path, index=False)
    ds = data.load(str(path), target="label")
    assert ds.task == "classification" and ds.kind == "tabular"
    assert list(ds.x.columns) == ["size", "colour"]
    assert ds.x["size"].isna().sum() == 1


def test_parquet_and_regression_inferred(tmp_path):
    frame = pd.DataFrame({"a": np.arange(50.0), "y": np.linspace(0, 1, 50) ** 2})
    path = tmp_path / "rows.parquet"
    frame.to_parquet(path)
    ds = data.load(str(path), target="y")
    assert ds.task == "regression"


def test_npz_images_and_tables(tmp_path):
    images = tmp_path / "images.npz"
    np.savez(images, x=np.zeros((30, 5, 5, 3)), y=np.arange(30) % 3)
    assert data.load(str(images)).kind == "image"
    table = tmp_path / "table.npz"
    np.savez(table, x=np.zeros((30, 4)), y=np.arange(30) % 2)
    ds = data.load(str(table))
    assert ds.kind == "tabular" and list(ds.x.columns) == ["x0", "x1", "x2", "x3"]


def test_digest_follows_content(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    pd.DataFrame({"x": [1, 2, 3], "target": [0, 1, 0]}).to_csv(a, index=False)
    pd.DataFrame({"x": [1, 2, 4], "target": [0, 1, 0]}).to_csv(b, index=False)
    assert data.load(str(a)).digest == data.load(str(a)).digest
    assert data.load(str(a)).digest != data.load(str(b)).digest


def _npz(tmp_path, **arrays):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize("make, message", [
    (lambda p: str(p / "missing.csv"), "data file not found: '"),
    (lambda p: "builtin:mnist", "unknown builtin data set 'builtin:mnist'; choose one of builtin:digits"),
    (lambda p: str(p / "rows.xlsx"), "unsupported data file type '.xlsx'"),
    (lambda p: _npz(p, x=np.zeros((3, 2))), "has no array 'y'"),
    (lambda p: _npz(p, features=np.zeros((3, 2))), "has no array 'x' or 'y'"),
    (lambda p: _npz(p, x=np.zeros((3, 2)), y=np.zeros(4)), "'x' has 3 rows but 'y' has 4"),
])
def test_bad_sources_name_the_value(tmp_path, make, message):
    with pytest.raises(FittrackError, match=None) as info:
        data.load(make(tmp_path))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_target_column(tmp_path):
    path = tmp_path / "rows.csv"
    pd.DataFrame({"x": [1, 2], "label": [0, 1]}).to_csv(path, index=False)
    with pytest.raises(FittrackError, match="target column 'target' is not in .*its columns are: x, label"):
        data.load(str(path))


def test_target_with_nan(tmp_path):
    path = tmp_path / "rows.csv"
    pd.DataFrame({"x": [1, 2, 3], "target": [0, None, 1]}).to_csv(path, index=False)
    with pytest.raises(FittrackError, match=r"target column 'target' has 1 missing values \(rows 1"):
        data.load(str(path))


def test_unknown_task():
    with pytest.raises(FittrackError, match="unknown task 'clustering'"):
        data.load("builtin:iris", task="clustering")
