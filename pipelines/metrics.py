"""Metrics as scikit-learn defines them, computed from the model's predicted labels.

Two classes: precision, recall and F1 of the positive class, the second of the sorted classes
(what a sigmoid output's `p >= 0.5` predicts); more classes: their macro average, over the classes
that occur among the true or the predicted labels (scikit-learn's `labels=None`). ROC AUC is
binary, or macro one-vs-rest. A division by zero gives 0 (`zero_division=0`).

Every score a run logs comes from here: per epoch (`output_scores`, on the network's outputs for
the validation split and a training sample, tracking.callbacks.EpochEvaluation), on the test
split and for the baselines: `classification_scores` and `regression_scores` call scikit-learn on
the labels and the probabilities or values. A model is compiled with its loss only.
"""

from __future__ import annotations

import numpy as np

from tracking.features import predicted_labels

METRIC_AVERAGING_TAG = "fittrack.metric_averaging"


def averaging(task: str, classes) -> str:
    """How a run's precision, recall, F1 and AUC average over classes, in words (the run's tag)."""
    if task == "regression":
        return "none: regression"
    classes = [c.item() if isinstance(c, np.generic) else c for c in classes]
    if len(classes) == 2:
        return f"binary, positive class {classes[1]!r}"
    return f"macro over {len(classes)} classes, AUC one-vs-rest"


def classification_scores(y_true, proba, classes) -> dict:
    """accuracy, precision, recall, f1_score, auc and cross_entropy (log loss) of class
    probabilities `proba` (n, k) against the labels `y_true`; `classes` sorted, as the columns are.
    `auc` is left out where scikit-learn cannot define it (a class missing from `y_true`)."""
    from sklearn import metrics

    classes = list(classes)
    y_true = np.asarray(y_true)
    proba = np.asarray(proba, dtype="float64")
    predicted = predicted_labels(proba, classes)
    if len(classes) == 2:
        averaged = {"average": "binary", "pos_label": classes[1]}
    else:
        averaged = {"average": "macro"}
    out = {
        "accuracy": metrics.accuracy_score(y_true, predicted),
        "precision": metrics.precision_score(y_true, predicted, zero_division=0, **averaged),
        "recall": metrics.recall_score(y_true, predicted, zero_division=0, **averaged),
        "f1_score": metrics.f1_score(y_true, predicted, zero_division=0, **averaged),
        # A float32 softmax sums to 1 within its own precision, not float64's, which log_loss warns of.
        "cross_entropy": metrics.log_loss(y_true, proba / proba.sum(axis=1, keepdims=True), labels=classes),
    }
    if set(classes) <= set(y_true.tolist()):
        if len(classes) == 2:
            out["auc"] = metrics.roc_auc_score(y_true == classes[1], proba[:, 1])
        else:
            out["auc"] = metrics.roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=classes)
    return {k: float(v) for k, v in out.items()}


def regression_scores(y_true, predicted) -> dict:
    """mse, mae and r2_score of predictions in the target's own units."""
    from sklearn import metrics

    y_true = np.asarray(y_true, dtype="float64").reshape(-1)
    predicted = np.asarray(predicted, dtype="float64").reshape(-1)
    return {"mse": float(metrics.mean_squared_error(y_true, predicted)),
            "mae": float(metrics.mean_absolute_error(y_true, predicted)),
            "r2_score": float(metrics.r2_score(y_true, predicted))}


def output_scores(output, labels, meta: dict) -> dict:
    """The metrics of network outputs (sigmoid, softmax, or values in the target's units) against
    the labels as the source had them: every name of tracking.metric_names but the loss."""
    from tracking.features import class_probabilities, decode_output
    from tracking.metric_names import metric_names

    if not np.all(np.isfinite(output)):
        # A diverged epoch: scikit-learn refuses NaN, and no score of such a model means anything.
        return {name: float("nan") for name in metric_names(meta["task"]) if name != "loss"}
    if meta["task"] == "regression":
        return regression_scores(labels, decode_output(output, meta))
    return classification_scores(labels, class_probabilities(output, meta), meta["classes"])
