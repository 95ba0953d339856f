"""The features stage (tracking.features): preprocessing fitted on training rows, targets encoded, outputs decoded."""

import numpy as np
import pandas as pd

from tracking.datasets import SplitData
from tracking.features import (categorical_as_strings, class_codes, decode_output, encode_target, feature_types,
                               image_scale, make_preprocessor, prepare, prepare_features)
from tracking.parts import Part


def _rows():
    return pd.DataFrame({
        "age": [20.0, 30.0, np.nan, 50.0],
        "rooms": [1, 2, 3, 4],
        "city": ["paris", None, "rome", "paris"],
        "owner": [True, False, True, False],
    })


def test_feature_types_split_numeric_from_categorical():
    numeric, categorical = feature_types(_rows())
    assert numeric == ["age", "rooms"]
    assert categorical == ["city", "owner"]


def test_preprocessor_is_fitted_on_training_rows_only():
    train = _rows()
    numeric, categorical = feature_types(train)
    pre = make_preprocessor(train).fit(categorical_as_strings(train, categorical))
    meta = {"kind": "tabular", "columns": list(train.columns), "categorical": categorical}
    other = pd.DataFrame({"age": [1000.0], "rooms": [100], "city": ["oslo"], "owner": [True]})
    features = prepare_features(other, meta, pre)
    scaler = pre.named_transformers_["numeric"][1]
    # The missing age is imputed with the training median (30) before scaling, centred on the median.
    assert scaler.center_.tolist() == [30.0, 2.5]
    encoder = pre.named_transformers_["categorical"][-1]
    assert encoder.categories_[0].tolist() == ["paris", "rome"]
    # An unseen city is ignored (zeros in its one-hot block), not an error.
    assert features.shape == (1, 2 + 2 + 2)
    assert features[0, 2:4].tolist() == [0.0, 0.0]
    assert np.isfinite(prepare_features(train, meta, pre)).all()
    # Far outside the training rows, smooth clipping bounds the scaled value below 3 (a standard
    # scaler would give about 48 for age 1000).
    assert 2.9 < features[0, 0] < 3.0


def test_smooth_clipping_keeps_small_values_and_bounds_large_ones():
    from tracking.features import smooth_clip

    x = np.array([-1e6, -3.0, 0.0, 0.1, 3.0, 1e6])
    clipped = smooth_clip(x)
    assert np.all(np.abs(clipped) < 3.0)
    assert np.all(np.diff(clipped) > 0)  # order kept
    assert abs(clipped[3] - 0.1) < 1e-3
    assert abs(clipped[4] - 3 / np.sqrt(2)) < 1e-12


def test_standard_scaling_is_still_there():
    train = _rows()[["age", "rooms"]]
    pre = make_preprocessor(train, "standard").fit(train)
    assert pre.named_transformers_["numeric"][-1].mean_.tolist() == [(20 + 30 + 30 + 50) / 4, 2.5]


def test_image_scale_and_targets():
    assert image_scale(np.array([[0, 16.0]])) == 16.0
    meta = {"task": "classification", "classes": ["a", "b", "c"]}
    onehot = encode_target(["c", "a"], meta)
    assert onehot.tolist() == [[0, 0, 1], [1, 0, 0]]
    assert decode_output(onehot, meta).tolist() == ["c", "a"]
    binary = {"task": "classification", "classes": [0, 1]}
    assert encode_target([1, 0], binary).ravel().tolist() == [1.0, 0.0]
    assert decode_output(np.array([[0.9], [0.2]]), binary).tolist() == [1, 0]
    assert class_codes(np.array([2, 0]), [0, 1, 2]).tolist() == [2, 0]


def test_raw_strings_in_a_numeric_column_are_imputed_as_in_training():
    # Trained on data loaded with mixed_columns=numeric: the model still meets `abc` in raw rows.
    train = _rows()
    numeric, categorical = feature_types(train)
    pre = make_preprocessor(train).fit(categorical_as_strings(train, categorical))
    meta = {"kind": "tabular", "columns": list(train.columns), "categorical": categorical}
    raw = pd.DataFrame({"age": ["abc", "50", None], "rooms": [2, 2, 2], "city": ["rome"] * 3, "owner": [True] * 3})
    features = prepare_features(raw, meta, pre)
    missing = prepare_features(raw.assign(age=[np.nan, 50.0, np.nan]), meta, pre)
    assert np.isfinite(features).all()
    assert features.tolist() == missing.tolist()
    # The training median (30) fills both the string and the missing value.
    assert features[0, 0] == features[2, 0] == prepare_features(train.iloc[[1]], meta, pre)[0, 0]


def test_prepare_fits_on_the_training_part_and_encodes_all_three():
    train = _rows()
    other = pd.DataFrame({"age": [1000.0], "rooms": [100], "city": ["oslo"], "owner": [True]})
    parts = {"train": Part(train, np.array(["a", "b", "a", "b"])), "val": Part(other, np.array(["b"])),
             "test": Part(other, np.array(["a"]))}
    prepared = prepare(SplitData(parts, "label", "classification", "tabular", "rows.csv", "d", classes=["a", "b"]))
    assert prepared.meta["categorical"] == ["city", "owner"]
    assert prepared.preprocessor.named_transformers_["numeric"][1].center_.tolist() == [30.0, 2.5]
    assert prepared.meta["numeric_scaling"] == "robust"
    assert {n: f.shape for n, f in prepared.features.items()} == {"train": (4, 6), "val": (1, 6), "test": (1, 6)}
    assert prepared.targets["val"].tolist() == [[1.0]]
    assert prepared.labels["test"].tolist() == ["a"]
    assert prepared.raw_train_x is train
