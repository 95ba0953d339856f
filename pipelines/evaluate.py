"""The test split, touched once at the end of a run."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tracking.features import Prepared


def evaluate_test(model, prepared: Prepared) -> tuple[dict, np.ndarray]:
    """The test split, touched once: `test_loss`, the model's compiled loss (regularisation
    included, as in val_loss), the other `test_` metrics from scikit-learn on the same predictions
    (pipelines.metrics, as every epoch's are), and the predicted labels or values."""
    test_metrics, predicted, _ = _evaluate(model, prepared)
    return test_metrics, predicted


def evaluate_and_log_test(model, prepared: Prepared) -> tuple[dict, np.ndarray]:
    """evaluate_test, logged into the active run: the `test_` metrics, and from the same outputs the
    per-class metrics, curves and worst rows of tracking.evaluation (`evaluation/`). What the
    train step and the tune step's best trial share."""
    import mlflow

    from tracking.evaluation import log_test_evaluation

    test_metrics, predicted, output = _evaluate(model, prepared)
    mlflow.log_metrics(test_metrics)
    log_test_evaluation(output, prepared.labels["test"], prepared.meta, prepared.raw_test_x)
    return test_metrics, predicted


def _evaluate(model, prepared: Prepared) -> tuple[dict, np.ndarray, np.ndarray]:
    import keras

    from pipelines.metrics import output_scores
    from tracking.features import decode_output

    features, meta = prepared.features["test"], prepared.meta
    output = model.predict(features, verbose=0)
    loss = model.compute_loss(x=features, y=prepared.targets["test"], y_pred=output)
    scores = output_scores(output, prepared.labels["test"], meta)
    return ({"test_loss": float(keras.ops.convert_to_numpy(loss)), **{f"test_{k}": v for k, v in scores.items()}},
            decode_output(output, meta), output)
