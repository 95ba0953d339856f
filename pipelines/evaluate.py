"""The test split, touched once at the end of a run."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tracking.features import Prepared


def evaluate_test(model, prepared: Prepared) -> tuple[dict, np.ndarray]:
    """The test split, touched once: `test_loss` from Keras (regularisation included, as in
    val_loss), the other `test_` metrics from scikit-learn on the predictions (pipelines.metrics,
    exact where the per-epoch AUC is approximate), and the predicted labels or values."""
    from pipelines.metrics import classification_scores, regression_scores
    from tracking.features import class_probabilities, decode_output

    features, meta, y_true = prepared.features["test"], prepared.meta, prepared.labels["test"]
    loss = model.evaluate(features, prepared.targets["test"], verbose=0, return_dict=True)["loss"]
    output = model.predict(features, verbose=0)
    predicted = decode_output(output, meta)
    if meta["task"] == "regression":
        scores = regression_scores(y_true, predicted)
    else:
        scores = classification_scores(y_true, class_probabilities(output, meta), meta["classes"])
    return {"test_loss": float(loss), **{f"test_{k}": v for k, v in scores.items()}}, predicted
