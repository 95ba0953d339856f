"""Preprocessing fitted on the training split only; it travels with the logged model."""

from __future__ import annotations

import numpy as np
import pandas as pd


def make_preprocessor(x_train: pd.DataFrame):
    """Impute, scale numeric columns and one-hot categorical ones (unknown categories ignored)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric, categorical = feature_types(x_train)
    transformers = []
    if numeric:
        transformers.append(("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric))
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


def feature_types(x: pd.DataFrame) -> tuple[list[str], list[str]]:
    numeric = [c for c in x.columns if pd.api.types.is_numeric_dtype(x[c]) and not pd.api.types.is_bool_dtype(x[c])]
    categorical = [c for c in x.columns if c not in numeric]
    return numeric, categorical


def image_scale(x_train: np.ndarray) -> float:
    """The divisor that brings training pixels into [0, 1] (8x8 digits go to 16, photos to 255)."""
    top = float(np.max(np.abs(x_train))) if x_train.size else 1.0
    return top if top > 0 else 1.0
