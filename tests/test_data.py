import numpy as np
import pandas as pd
import pytest

from pipelines import data
from pipelines.errors import FittrackError
from pipelines.params import MIXED_COLUMNS, DataParams


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
    with pytest.raises(FittrackError, match="task must be one of auto, classification, regression, got 'clustering'"):
        DataParams(data="builtin:iris", task="clustering")


def _mixed_csv(tmp_path, strings=("abc", "n/a?", "abc"), rows=60):
    """A column of numbers with a few strings in it, as a hand-edited spreadsheet has them."""
    size = np.round(np.linspace(-2, 2, rows), 3).astype(object)
    size[[3, 10, 20, 30, 40, 45, 50][:len(strings)]] = list(strings)
    path = tmp_path / "mixed.csv"
    pd.DataFrame({"size": size, "colour": ["red", "blue"] * (rows // 2), "target": np.arange(rows) % 2}).to_csv(
        path, index=False)
    return str(path)


def test_mixed_column_warning_names_the_column_the_count_and_the_values(tmp_path):
    path = _mixed_csv(tmp_path)
    with pytest.warns(data.MixedColumnWarning) as record:
        data.load(path)
    assert len(record) == 1
    message = str(record[0].message)
    assert f"column 'size' of '{path}' is numeric except for 3 values: 'abc', 'n/a?';" in message
    assert "\n" not in message
    # The colour column is text, not numbers with typos: no warning names it.
    assert "colour" not in message


def test_mixed_column_warning_shows_at_most_five_values(tmp_path):
    path = _mixed_csv(tmp_path, strings=[f"bad{i}" for i in range(7)], rows=100)
    with pytest.warns(data.MixedColumnWarning, match=r"except for 7 values: 'bad0', 'bad1', 'bad2', 'bad3', "
                                                     r"'bad4', \.\.\.;"):
        data.load(path)


def test_mixed_columns_numeric_makes_the_strings_missing_numbers(tmp_path):
    path = _mixed_csv(tmp_path)
    raw = pd.read_csv(path)["size"]
    with pytest.warns(data.MixedColumnWarning, match="they become missing values"):
        ds = data.load(path, mixed_columns="numeric")
    size = ds.x["size"]
    assert ds.coerced == ["size"]
    assert size.dtype == np.float64
    assert size.isna().sum() == 3 and size.isna().tolist() == raw.isin(["abc", "n/a?"]).tolist()
    assert size.dropna().tolist() == pd.to_numeric(raw, errors="coerce").dropna().tolist()
    assert ds.x["colour"].tolist() == ["red", "blue"] * 30


def test_mixed_columns_categorical_keeps_the_strings(tmp_path):
    path = _mixed_csv(tmp_path)
    with pytest.warns(data.MixedColumnWarning, match="stays categorical"):
        ds = data.load(path, mixed_columns="categorical")
    assert not pd.api.types.is_numeric_dtype(ds.x["size"])
    assert (ds.x["size"] == "abc").sum() == 2 and ds.coerced == []
    # A different reading of the same file is different data: no split is shared between them.
    with pytest.warns(data.MixedColumnWarning):
        assert ds.digest != data.load(path, mixed_columns="numeric").digest


def test_mixed_columns_error_stops_with_one_line(tmp_path):
    path = _mixed_csv(tmp_path)
    with pytest.raises(FittrackError) as info:
        data.load(path, mixed_columns="error")
    message = str(info.value)
    assert message.startswith(f"column 'size' of '{path}' is numeric except for 3 values: 'abc', 'n/a?'; fix them")
    assert "mixed_columns=numeric" in message and "\n" not in message


def test_mostly_text_and_clean_columns_are_left_alone(tmp_path, recwarn):
    path = tmp_path / "rows.csv"
    # 4 of 6 values are numbers: under the 90% line, so these are categories, not typos.
    pd.DataFrame({"code": ["1", "2", "x", "3", "y", "4"], "n": [1.5, 2, 3, 4, 5, 6], "target": [0, 1] * 3}).to_csv(
        path, index=False)
    for choice in MIXED_COLUMNS:
        ds = data.load(str(path), mixed_columns=choice)
        assert ds.x["code"].tolist() == ["1", "2", "x", "3", "y", "4"]
        assert ds.x["n"].dtype == np.float64
    assert not [w for w in recwarn if issubclass(w.category, data.MixedColumnWarning)]


def _header_only_parquet(p):
    path = p / "empty.parquet"
    pd.DataFrame({"x": pd.Series([], dtype=float), "target": pd.Series([], dtype=int)}).to_parquet(path)
    return str(path)


def _write(p, name, text):
    (p / name).write_text(text)
    return str(p / name)


@pytest.mark.parametrize("make, kwargs, message", [
    (lambda p: _write(p, "one.csv", "x,target\n1,7\n2,7\n3,7\n"), {},
     "target column 'target' of '{p}/one.csv' holds one class only ('7' in all 3 rows); classification needs at "
     "least two classes"),
    (lambda p: _write(p, "one.csv", "x,label\n1,yes\n2,yes\n"), {"target": "label", "task": "classification"},
     "target column 'label' of '{p}/one.csv' holds one class only ('yes' in all 2 rows)"),
    (lambda p: _npz(p, x=np.zeros((4, 2)), y=np.ones(4, dtype=int)), {},
     "target array 'y' of '{p}/d.npz' holds one class only ('1' in all 4 rows)"),
    (lambda p: _write(p, "header.csv", "x,target\n"), {}, "data file '{p}/header.csv' has no rows (its columns: "
                                                          "x, target)"),
    (lambda p: _write(p, "blank.csv", ""), {}, "data file '{p}/blank.csv' is empty: no header, no rows"),
    (_header_only_parquet, {}, "data file '{p}/empty.parquet' has no rows (its columns: x, target)"),
    (lambda p: _npz(p, x=np.zeros((0, 3)), y=np.zeros(0)), {}, "NPZ file '{p}/d.npz' has no rows"),
    (lambda p: _write(p, "words.csv", "x,target\n1,low\n2,high\n3,n/a?\n"), {"task": "regression"},
     "task 'regression' needs a numeric target, but target column 'target' of '{p}/words.csv' holds values that "
     "are not numbers: 'low', 'high', 'n/a?'"),
])
def test_data_faults_stop_at_load_with_one_line(tmp_path, make, kwargs, message):
    with pytest.raises(FittrackError) as info:
        data.load(make(tmp_path), **kwargs)
    assert message.format(p=tmp_path) in str(info.value)
    assert "\n" not in str(info.value)
