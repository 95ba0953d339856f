import numpy as np
import pandas as pd
import pytest

from pipelines import data
from pipelines.errors import FittrackError
from pipelines.split import SplitConfig, split
from tracking.parts import class_balance


def test_split_is_stratified_disjoint_and_seeded():
    ds = data.load("builtin:iris")
    parts = split(SplitConfig(val_fraction=0.2, test_fraction=0.2, seed=3), ds)
    assert {k: len(v) for k, v in parts.items()} == {"train": 90, "val": 30, "test": 30}
    for part in parts.values():
        assert set(class_balance(part.y).values()) == {len(part) // 3}
    again = split(SplitConfig(val_fraction=0.2, test_fraction=0.2, seed=3), ds)
    assert all(parts[k].x.equals(again[k].x) for k in parts)
    other = split(SplitConfig(val_fraction=0.2, test_fraction=0.2, seed=4), ds)
    assert not parts["test"].x.equals(other["test"].x)
    rows = pd.concat([p.x for p in parts.values()])
    assert len(rows.drop_duplicates()) == len(ds.x.drop_duplicates())


def test_regression_split_not_stratified():
    ds = data.load("builtin:diabetes")
    parts = split(SplitConfig(), ds)
    assert sum(len(p) for p in parts.values()) == len(ds)


@pytest.mark.parametrize("val, test, message", [
    (0.5, 0.5, "val_fraction \\+ test_fraction must be below 1.*0.5 \\+ 0.5 = 1"),
    (0.7, 0.4, "must be below 1"),
    (0.0, 0.2, "val_fraction must be in \\(0, 1\\), got 0.0"),
    (0.2, 1.5, "test_fraction must be in \\(0, 1\\), got 1.5"),
])
def test_bad_fractions(val, test, message):
    with pytest.raises(FittrackError, match=message):
        SplitConfig(val_fraction=val, test_fraction=test)


def test_fraction_that_leaves_a_split_empty():
    ds = data.Dataset(x=pd.DataFrame({"a": np.arange(6.0)}), y=np.arange(6.0), target="t", task="regression",
                      kind="tabular", source="test", digest="d")
    with pytest.raises(FittrackError, match="the val split would be empty: 6 rows with val_fraction=0.05"):
        split(SplitConfig(val_fraction=0.05, test_fraction=0.3), ds)


def test_class_too_small_to_stratify():
    y = np.array(["a"] * 20 + ["b"] * 2)
    ds = data.Dataset(x=pd.DataFrame({"a": np.arange(22.0)}), y=y, target="t", task="classification",
                      kind="tabular", source="test", digest="d")
    with pytest.raises(FittrackError, match="class 'b' has only 2 row\\(s\\)"):
        split(SplitConfig(), ds)


def test_no_rows_is_named_as_such_not_blamed_on_the_fractions():
    ds = data.Dataset(x=pd.DataFrame({"a": []}), y=np.array([]), target="t", task="regression",
                      kind="tabular", source="/data/rows.csv", digest="d")
    with pytest.raises(FittrackError, match="^'/data/rows.csv' has no rows to split$"):
        split(SplitConfig(), ds)


def test_mixed_column_reaches_the_split_parts_as_numbers_and_is_matched_for_reuse(tmp_path, tracking):
    from pipelines.params import DataParams
    from pipelines.steps.split import find_split, run_split
    from tracking.datasets import load_split

    size = np.round(np.linspace(0, 1, 40), 3).astype(object)
    size[[5, 17]] = ["abc", "n/a?"]
    path = tmp_path / "mixed.csv"
    pd.DataFrame({"size": size, "target": np.arange(40) % 2}).to_csv(path, index=False)
    params = DataParams(data=str(path))
    with pytest.warns(data.MixedColumnWarning):
        run_id = run_split(params)
    parts = load_split(run_id).parts
    assert all(p.x["size"].dtype == np.float64 for p in parts.values())
    assert sum(int(p.x["size"].isna().sum()) for p in parts.values()) == 2
    assert tracking.client.get_run(run_id).data.params["mixed_columns"] == "numeric"
    with pytest.warns(data.MixedColumnWarning):
        assert find_split(params).info.run_id == run_id
        assert find_split(DataParams(data=str(path), mixed_columns="categorical")) is None
