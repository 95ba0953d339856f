"""The features stage: a split's parts as the network takes them, and the network's output back
to labels.

`prepare` fits the preprocessing on the training part only and encodes all three parts, once per
process; every step that fits (train, baselines, each trial of a study) takes its `Prepared`.

It lives in tracking/, not pipelines/, because the logged model (tracking.models) redoes the
same encoding on raw rows at predict time: the pyfunc model ships tracking/ as its code, and
tracking imports nothing from pipelines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "Prepared", "prepare",
    "make_preprocessor", "feature_params", "NUMERIC_SCALING", "smooth_clip", "feature_types", "image_scale",
    "prepare_features", "numeric_as_numbers", "categorical_as_strings", "encode_target", "class_codes",
    "decode_output", "class_probabilities", "predicted_labels", "THRESHOLD",
    "ENCODINGS", "MAX_CATEGORIES", "estimator_meta", "estimator_features", "flat_features",
    "category_levels",
]


@dataclass
class Prepared:
    """The split as the network sees it, plus what the logged model needs to redo it."""

    features: dict
    targets: dict  # encoded for the loss
    labels: dict  # as the source had them
    meta: dict
    preprocessor: object
    image_scale: float
    raw_train_x: object = None  # a few of these rows become the model's input example
    raw_test_x: object = None  # the test rows as the source had them (tracking.evaluation's worst rows)


def prepare(data) -> Prepared:
    """Fit preprocessing on the training part only; apply it to all three (`data`: a SplitData)."""
    train_x = data.parts["train"].x
    meta = {"kind": data.kind, "task": data.task, "classes": list(data.classes), "target": data.target}
    preprocessor, scale = None, 1.0
    if data.kind == "image":
        meta["input_shape"] = list(train_x.shape[1:])
        scale = image_scale(train_x)
    else:
        numeric, categorical = feature_types(train_x)
        meta.update(columns=list(map(str, train_x.columns)), categorical=categorical, coerced=list(data.coerced),
                    numeric_scaling=NUMERIC_SCALING)
        preprocessor = make_preprocessor(train_x, NUMERIC_SCALING)
        preprocessor.fit(categorical_as_strings(train_x, categorical))
    features = {n: prepare_features(p.x, meta, preprocessor) for n, p in data.parts.items()}
    targets = {n: encode_target(p.y, meta) for n, p in data.parts.items()}
    labels = {n: p.y for n, p in data.parts.items()}
    return Prepared(features, targets, labels, meta, preprocessor, scale, raw_train_x=train_x,
                    raw_test_x=data.parts["test"].x)


#: How numeric columns are scaled for the network (and the baselines that take its features):
#: "robust", RealMLP's robust scaling and smooth clipping (Holzmüller et al., 2024); "standard",
#: mean and standard deviation.
NUMERIC_SCALING = "robust"


def feature_params(meta: dict) -> dict:
    """What the features stage chose, as params of the run that fits on them (the UI shows it)."""
    return {"numeric_scaling": meta["numeric_scaling"]} if "numeric_scaling" in meta else {}


def make_preprocessor(x_train: pd.DataFrame, numeric_scaling: str = NUMERIC_SCALING):
    """Impute, scale numeric columns and one-hot categorical ones (unknown categories ignored)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, RobustScaler, StandardScaler

    numeric, categorical = feature_types(x_train)
    transformers = []
    if numeric:
        if numeric_scaling == "robust":
            # The interquartile range, scaled to a normal's unit variance, ignores the outliers a
            # standard deviation chases; smooth clipping then bounds what is left far out.
            scaler = [RobustScaler(unit_variance=True), FunctionTransformer(smooth_clip, feature_names_out="one-to-one")]
        else:
            scaler = [StandardScaler()]
        transformers.append(("numeric", make_pipeline(SimpleImputer(strategy="median"), *scaler), numeric))
    if categorical:
        transformers.append((
            "categorical",
            make_pipeline(
                SimpleImputer(strategy="most_frequent"),
                OneHotEncoder(handle_unknown="ignore", sparse_output=False),
            ),
            categorical,
        ))
    return ColumnTransformer(transformers, sparse_threshold=0.0)


def smooth_clip(x):
    """RealMLP's smooth clipping: about x near 0, tending to +-3 far out."""
    return x / np.sqrt(1 + (x / 3) ** 2)


def feature_types(x: pd.DataFrame) -> tuple[list[str], list[str]]:
    numeric = [c for c in x.columns if pd.api.types.is_numeric_dtype(x[c]) and not pd.api.types.is_bool_dtype(x[c])]
    categorical = [c for c in x.columns if c not in numeric]
    return numeric, categorical


def image_scale(x_train: np.ndarray) -> float:
    """The divisor that brings training pixels into [0, 1] (8x8 digits go to 16, photos to 255)."""
    top = float(np.max(np.abs(x_train))) if x_train.size else 1.0
    return top if top > 0 else 1.0


def prepare_features(x, meta: dict, preprocessor=None) -> np.ndarray:
    """Raw rows (a DataFrame, or an image array) to what the network takes."""
    if meta["kind"] == "image":
        x = x.to_numpy() if isinstance(x, pd.DataFrame) else np.asarray(x)
        return x.reshape((-1, *meta["input_shape"])).astype("float32")
    return np.asarray(preprocessor.transform(_table_rows(x, meta)), dtype="float32")


def _table_rows(x, meta: dict) -> pd.DataFrame:
    """The training columns, categories as strings and numbers as numbers, whatever the rows' dtypes."""
    if not isinstance(x, pd.DataFrame):
        x = pd.DataFrame(np.asarray(x), columns=meta["columns"])
    x = categorical_as_strings(x[meta["columns"]], meta["categorical"])
    return numeric_as_numbers(x, [c for c in meta["columns"] if c not in meta["categorical"]])


def numeric_as_numbers(x: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Strings in a numeric column become missing values, imputed as in training: raw rows hold
    them where the data was loaded with mixed_columns=numeric (`abc`, `n/a?`)."""
    mixed = [c for c in columns if not pd.api.types.is_numeric_dtype(x[c])]
    if not mixed:
        return x
    x = x.copy()
    for column in mixed:
        x[column] = pd.to_numeric(x[column], errors="coerce").astype("float64")
    return x


def categorical_as_strings(x: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """One type for the imputer and the encoder, whatever the source's dtype; NaN stays NaN."""
    x = x.copy()
    for column in columns:
        x[column] = x[column].astype(object).map(lambda v: np.nan if pd.isna(v) else str(v))
    return x


def encode_target(y, meta: dict) -> np.ndarray:
    """Class labels to what the loss wants (0/1 column for two classes, one-hot for more)."""
    if meta["task"] == "regression":
        return np.asarray(y, dtype="float32").reshape(-1, 1)
    codes = class_codes(y, meta["classes"])
    if len(meta["classes"]) == 2:
        return codes.astype("float32").reshape(-1, 1)
    return np.eye(len(meta["classes"]), dtype="float32")[codes]


def class_codes(y, classes: list) -> np.ndarray:
    codes = pd.Categorical(np.asarray(y), categories=classes).codes
    if (codes < 0).any():
        raise ValueError(f"labels not among the training classes {classes}")
    return codes.astype("int64")


def decode_output(output: np.ndarray, meta: dict) -> np.ndarray:
    if meta["task"] == "regression":
        return output.reshape(-1)
    return predicted_labels(class_probabilities(output, meta), meta["classes"])


#: Two classes: the positive class is predicted from this probability up.
THRESHOLD = 0.5


def predicted_labels(proba, classes) -> np.ndarray:
    """The label a model predicts from class probabilities (n, k), columns in `classes` order: the
    positive class from `p >= THRESHOLD` for two classes (ties to it), the argmax for more. The one
    rule for the logged model's answers, every metric (pipelines.metrics) and the evaluation artifacts."""
    classes = np.asarray(classes)
    proba = np.asarray(proba)
    if len(classes) == 2:
        return classes[(proba[:, 1] >= THRESHOLD).astype(int)]
    return classes[np.argmax(proba, axis=1)]


def class_probabilities(output: np.ndarray, meta: dict) -> np.ndarray:
    if len(meta["classes"]) == 2:
        p = output.reshape(-1)
        return np.stack([1 - p, p], axis=1)
    return output


#: How a scikit-learn baseline takes rows: "network", what the network sees (scaled numbers, one-hot
#: categories, pixels in [0, 1]) as one flat row; "native", the raw columns with categories as pandas
#: categories, for HistGradientBoosting's native categorical support (images: raw pixels, flat).
ENCODINGS = ("network", "native")
#: HistGradientBoosting refuses a categorical column with more categories than its max_bins (255).
MAX_CATEGORIES = 255


def estimator_meta(prepared: Prepared, encoding: str) -> dict:
    """What a baseline's logged model needs to redo `encoding` on raw rows, on top of the network's meta."""
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    meta = {**prepared.meta, "encoding": encoding, "image_scale": prepared.image_scale}
    if encoding == "native" and meta["kind"] != "image":
        meta["categories"] = category_levels(prepared.raw_train_x, meta["categorical"])
    return meta


def estimator_features(x, meta: dict, preprocessor=None):
    """Raw rows (a DataFrame, or an image array) to what a baseline takes, as `meta["encoding"]` says."""
    if meta["encoding"] == "native" and meta["kind"] != "image":
        x = _table_rows(x, meta)
        for column, levels in meta["categories"].items():
            # Fixed from the training part: any rows map a category to the same code; unknown ones are missing.
            x[column] = pd.Categorical(x[column], categories=levels)
        return x
    return flat_features(prepare_features(x, meta, preprocessor), meta)


def flat_features(features: np.ndarray, meta: dict) -> np.ndarray:
    """What the network takes (prepare_features) as a baseline takes it: one flat row per example,
    pixels divided by the image scale for the "network" encoding, raw for "native"."""
    if meta["encoding"] == "network" and meta["kind"] == "image":
        features = features / meta["image_scale"]
    return features.reshape(len(features), -1)


def category_levels(x_train: pd.DataFrame, columns: list[str], limit: int = MAX_CATEGORIES) -> dict[str, list]:
    """Each column's categories in the training rows, as strings: the `limit` most frequent, sorted."""
    x = categorical_as_strings(x_train[columns], columns)
    levels = {}
    for column in columns:
        counts = x[column].value_counts(dropna=True)
        levels[column] = sorted(sorted(counts.index, key=lambda v: (-counts[v], v))[:limit])
    return levels
