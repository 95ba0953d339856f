"""Metrics as scikit-learn defines them, computed from the model's predicted labels.

Two classes: precision, recall and F1 of the positive class, the second of the sorted classes
(what a sigmoid output's `p >= 0.5` predicts); more classes: their macro average, over the classes
that occur among the true or the predicted labels (scikit-learn's `labels=None`). ROC AUC is
binary, or macro one-vs-rest. A division by zero gives 0 (`zero_division=0`).

Per epoch, streaming Keras metrics count a confusion matrix batch by batch (keras.ops only, so
any backend); on the test split and for the baselines, `classification_scores` and
`regression_scores` call scikit-learn on the labels and probabilities. The Keras classes are
defined on first use (`keras_metrics`, or the module's attributes `Precision`, `Recall`,
`F1Score`, `Accuracy`, `AUC`, `ConfusionMatrixMetric`) so that importing this module does not start
TensorFlow; a saved model compiled with them loads once they are defined
(`register_keras_metrics()`).
"""

from __future__ import annotations

import functools

import numpy as np

METRIC_AVERAGING_TAG = "fittrack.metric_averaging"
THRESHOLD = 0.5
# Per-epoch AUC is Keras's: scores counted in AUC_THRESHOLDS - 1 evenly spaced buckets, a positive
# and a negative in one bucket taken for a tie. A confident model's scores crowd next to 0 and 1,
# where even buckets cannot tell 1e-6 from 1e-3, so each score is first spread out by
# p -> sigmoid(logit(p) / AUC_SPREAD), which is monotonic and so leaves the ROC curve as it is.
# On confident 10-class outputs this kept the AUC within 3e-5 of scikit-learn's where 2000 plain
# buckets were 2.4e-3 off; on 60 uniform scores, within one tied pair (6e-4). Explicit, unevenly
# spaced thresholds would do as well but take Keras's slower path, which fails in graph mode when
# every batch has the same size (multi_label, Keras 3.15).
AUC_THRESHOLDS = 4000
AUC_SPREAD = 3.0

_KERAS_CLASSES = ("ConfusionMatrixMetric", "Accuracy", "Precision", "Recall", "F1Score", "AUC")


def averaging(task: str, classes) -> str:
    """How a run's precision, recall, F1 and AUC average over classes, in words (the run's tag)."""
    if task == "regression":
        return "none: regression"
    classes = [c.item() if isinstance(c, np.generic) else c for c in classes]
    if len(classes) == 2:
        return f"binary, positive class {classes[1]!r}"
    return f"macro over {len(classes)} classes, AUC one-vs-rest"


def predicted_labels(proba, classes) -> np.ndarray:
    """The label a model predicts from class probabilities (n, k), columns in `classes` order."""
    classes = np.asarray(classes)
    proba = np.asarray(proba)
    if len(classes) == 2:
        # As the sigmoid output is decoded (tracking.features.decode_output): ties go to the positive class.
        return classes[(proba[:, 1] >= THRESHOLD).astype(int)]
    return classes[np.argmax(proba, axis=1)]


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
        "cross_entropy": metrics.log_loss(y_true, proba, labels=classes),
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


def keras_metrics(task: str, n_classes: int) -> list:
    """The metrics to compile a model with, under the names the runs log (Keras adds `val_`)."""
    import keras

    m = keras.metrics
    if task == "regression":
        return [m.MeanSquaredError(name="mse"), m.MeanAbsoluteError(name="mae"), m.R2Score(name="r2_score")]
    k = register_keras_metrics()
    # Per-epoch AUC approximates (see AUC_THRESHOLDS); the test split's is scikit-learn's, exact.
    # Over one-hot columns, multi_label with no label weights is the macro mean of one-vs-rest AUCs.
    auc = (k["AUC"](num_thresholds=AUC_THRESHOLDS, name="auc") if n_classes == 2 else
           k["AUC"](num_thresholds=AUC_THRESHOLDS, multi_label=True, num_labels=n_classes, name="auc"))
    # The plain cross-entropy, what `loss` is without label smoothing, and what a baseline's log loss is.
    cross_entropy = (m.BinaryCrossentropy(name="cross_entropy") if n_classes == 2 else
                     m.CategoricalCrossentropy(name="cross_entropy"))
    return [k["Accuracy"](n_classes, name="accuracy"), k["Precision"](n_classes, name="precision"),
            k["Recall"](n_classes, name="recall"), k["F1Score"](n_classes, name="f1_score"), auc, cross_entropy]


def __getattr__(name):
    if name in _KERAS_CLASSES:
        return register_keras_metrics()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def register_keras_metrics() -> dict:
    """Define the streaming Keras metrics and register them (as `fittrack>NAME`) so that a saved
    model compiled with them loads; returns them by name."""
    import keras
    from keras import ops

    class ConfusionMatrixMetric(keras.metrics.Metric):
        """Counts (true class, predicted class) pairs over every batch since the last reset,
        weighted by `sample_weight` as Keras's own metrics are (class weights, in training).

        `num_classes` 2 means one sigmoid column, thresholded at 0.5; more, one-hot targets and
        softmax outputs, decoded by argmax.
        """

        def __init__(self, num_classes, name=None, dtype=None):
            super().__init__(name=name, dtype=dtype)
            if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
                raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
            self.num_classes = num_classes
            # float32 counts are exact up to 2**24 rows per cell.
            self.confusion = self.add_variable(shape=(num_classes, num_classes), initializer="zeros",
                                               name="confusion")

        def update_state(self, y_true, y_pred, sample_weight=None):
            rows = ops.one_hot(self._codes(y_true), self.num_classes, dtype=self.dtype)
            if sample_weight is not None:
                rows = rows * ops.reshape(ops.cast(sample_weight, self.dtype), (-1, 1))
            columns = ops.one_hot(self._codes(y_pred), self.num_classes, dtype=self.dtype)
            self.confusion.assign_add(ops.matmul(ops.transpose(rows), columns))

        def _codes(self, y):
            y = ops.convert_to_tensor(y)
            if self.num_classes == 2:
                return ops.cast(ops.reshape(y, (-1,)) >= THRESHOLD, "int32")
            return ops.argmax(y, axis=-1)

        def _counts(self):
            confusion = ops.convert_to_tensor(self.confusion)
            return ops.diagonal(confusion), ops.sum(confusion, axis=0), ops.sum(confusion, axis=1)

        def _average(self, per_class, predicted, actual):
            if self.num_classes == 2:
                return per_class[1]
            present = ops.cast(predicted + actual > 0, self.dtype)
            return ops.divide_no_nan(ops.sum(per_class * present), ops.sum(present))

        def get_config(self):
            return {**super().get_config(), "num_classes": self.num_classes}

    class Accuracy(ConfusionMatrixMetric):
        """Share of rows whose predicted label is the true one."""

        def result(self):
            true_positives, predicted, _ = self._counts()
            return ops.divide_no_nan(ops.sum(true_positives), ops.sum(predicted))

    class Precision(ConfusionMatrixMetric):
        """scikit-learn's precision_score: of the positive class (2), macro (more)."""

        def result(self):
            true_positives, predicted, actual = self._counts()
            return self._average(ops.divide_no_nan(true_positives, predicted), predicted, actual)

    class Recall(ConfusionMatrixMetric):
        """scikit-learn's recall_score: of the positive class (2), macro (more)."""

        def result(self):
            true_positives, predicted, actual = self._counts()
            return self._average(ops.divide_no_nan(true_positives, actual), predicted, actual)

    class F1Score(ConfusionMatrixMetric):
        """scikit-learn's f1_score, 2 TP / (2 TP + FP + FN): of the positive class (2), macro (more)."""

        def result(self):
            true_positives, predicted, actual = self._counts()
            return self._average(ops.divide_no_nan(2 * true_positives, predicted + actual), predicted, actual)

    class AUC(keras.metrics.AUC):
        """Keras's AUC of the scores spread out by p -> sigmoid(logit(p) / AUC_SPREAD) (see AUC_THRESHOLDS)."""

        def update_state(self, y_true, y_pred, sample_weight=None):
            p = ops.clip(ops.cast(y_pred, self.dtype), 0.0, 1.0)
            # p**(1/s) / (p**(1/s) + (1-p)**(1/s)) is that sigmoid, finite at p = 0 and p = 1.
            odds, against = ops.power(p, 1.0 / AUC_SPREAD), ops.power(1.0 - p, 1.0 / AUC_SPREAD)
            super().update_state(y_true, odds / (odds + against), sample_weight)

    classes = {"ConfusionMatrixMetric": ConfusionMatrixMetric, "Accuracy": Accuracy, "Precision": Precision,
               "Recall": Recall, "F1Score": F1Score, "AUC": AUC}
    for name, cls in classes.items():
        cls.__qualname__ = name
        keras.saving.register_keras_serializable(package="fittrack", name=name)(cls)
    return classes
