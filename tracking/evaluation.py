"""What a run shows of its test split beyond the `test_*` scores: per-class metrics, curves and the
rows the model got most wrong, under the run's `evaluation/` artifacts.

Logged once a run, from the network's raw test outputs (a sigmoid column, a softmax, or values in
the target's units), by `log_test_evaluation`; the train step and the tune step's best trial both
call it (pipelines.evaluate.evaluate_and_log_test). Every number is scikit-learn's and every plot
one of its displays:

- classes: precision, recall, F1 and support of each class (`precision_recall_fscore_support`,
  `zero_division=0` as pipelines.metrics), as metrics `test_<metric>_class_<label>` and as the table
  `evaluation/per_class_metrics.json` (with each class's one-vs-rest ROC AUC and average
  precision); ROC and precision-recall curves (`RocCurveDisplay`, `PrecisionRecallDisplay`), the
  positive class's for two classes, one-vs-rest one a class for more; a calibration curve
  (`CalibrationDisplay`): the positive class's probability for two classes, the top-label
  confidence (the predicted class's probability against whether the prediction was right) for
  more, one curve whatever the number of classes, where one a class would rest on a tenth of the
  rows each and ten bins of it on a few rows a bin;
- regression: predicted against actual and residuals against predicted (`PredictionErrorDisplay`,
  both kinds, `evaluation/prediction_error.png`);
- `evaluation/worst_predictions.json`: the WORST_ROWS test rows with the lowest probability of
  their true class (regression: the largest absolute error), worst first, with their row in the
  test split, the input columns as the source had them (images: a thumbnail, which MLflow keeps
  under `table_images/`), the true and predicted label and both probabilities; for images also
  `evaluation/misclassified.png`, a grid of misclassified test images.

The averaged scores (`test_precision`, ...) stay pipelines.metrics's alone: nothing here logs an
average under another definition.
"""

from __future__ import annotations

import re
import sys

import numpy as np
import pandas as pd

from tracking.features import class_probabilities, predicted_labels

EVALUATION_DIR = "evaluation"
PER_CLASS_TABLE = f"{EVALUATION_DIR}/per_class_metrics.json"
WORST_TABLE = f"{EVALUATION_DIR}/worst_predictions.json"
ROC_PNG = f"{EVALUATION_DIR}/roc_curve.png"
PR_PNG = f"{EVALUATION_DIR}/precision_recall_curve.png"
CALIBRATION_PNG = f"{EVALUATION_DIR}/calibration_curve.png"
PREDICTION_ERROR_PNG = f"{EVALUATION_DIR}/prediction_error.png"
MISCLASSIFIED_PNG = f"{EVALUATION_DIR}/misclassified.png"

#: Rows in the worst-predictions table: one screen of the UI's table view, enough to see a pattern
#: (a class, a range of a column), and 20 thumbnails for images.
WORST_ROWS = 20
#: Misclassified images in the grid (5 x 5).
GRID_IMAGES = 25
#: Bins of the calibration curve: 10 equal-width bins, scikit-learn's usual choice for a few hundred rows.
CALIBRATION_BINS = 10
#: Curves with a legend entry each; more classes draw their curves without one.
LEGEND_CLASSES = 20
#: The smallest side of a thumbnail in the worst-predictions table (8x8 digits become 64x64).
THUMBNAIL_PIXELS = 64
PER_CLASS_METRICS = ("precision", "recall", "f1_score", "support")

__all__ = ["log_test_evaluation", "per_class_metrics", "worst_predictions", "metric_key", "class_keys",
           "WORST_ROWS"]


def log_test_evaluation(output, y_true, meta: dict, raw_x=None, worst: int = WORST_ROWS) -> list[str]:
    """Log the test split's evaluation into the active run; return the artifact paths logged.

    `output`: the network's test outputs; `y_true`: the test labels as the source had them; `meta`:
    Prepared.meta (task, kind, classes); `raw_x`: the test rows as the source had them (a DataFrame
    or an N x H x W image array), or None for a table without its input columns."""
    import mlflow

    output = np.asarray(output, dtype="float64")
    if not np.all(np.isfinite(output)):
        print("fittrack: test outputs hold NaN or infinite values; no evaluation artifacts logged", file=sys.stderr)
        return []
    if meta["task"] == "regression":
        return _log_regression(output.reshape(-1), np.asarray(y_true, dtype="float64").reshape(-1), meta, raw_x,
                               worst)

    classes = list(meta["classes"])
    proba = class_probabilities(output, meta)
    y_true = np.asarray(y_true)
    table = per_class_metrics(y_true, proba, classes)
    mlflow.log_metrics(_per_class_metric_values(table, classes))
    mlflow.log_table(_jsonable(table), artifact_file=PER_CLASS_TABLE)
    logged = [PER_CLASS_TABLE]
    for path, figure in _classification_figures(y_true, proba, classes).items():
        mlflow.log_figure(figure, path)
        _close(figure)
        logged.append(path)
    rows = worst_predictions(y_true, proba, classes, raw_x, meta, worst)
    mlflow.log_table(rows, artifact_file=WORST_TABLE)
    logged.append(WORST_TABLE)
    if meta.get("kind") == "image" and raw_x is not None:
        figure = _misclassified_grid(y_true, proba, classes, np.asarray(raw_x))
        mlflow.log_figure(figure, MISCLASSIFIED_PNG)
        _close(figure)
        logged.append(MISCLASSIFIED_PNG)
    return logged


# --- numbers -----------------------------------------------------------------------------------


def per_class_metrics(y_true, proba, classes) -> pd.DataFrame:
    """One row a class, in `classes` order: precision, recall, f1_score, support (scikit-learn's
    `precision_recall_fscore_support`, zero_division=0), and the class's one-vs-rest ROC AUC and
    average precision (NaN for a class missing from the test split)."""
    from sklearn import metrics

    y_true = np.asarray(y_true)
    predicted = predicted_labels(proba, classes)
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        y_true, predicted, labels=classes, zero_division=0)
    auc, ap = [], []
    for i, label in enumerate(classes):
        positive = y_true == label
        if positive.all() or not positive.any():
            auc.append(float("nan"))
            ap.append(float("nan"))
            continue
        auc.append(float(metrics.roc_auc_score(positive, proba[:, i])))
        ap.append(float(metrics.average_precision_score(positive, proba[:, i])))
    return pd.DataFrame({"class": [_plain(c) for c in classes], "precision": precision.astype(float),
                         "recall": recall.astype(float), "f1_score": f1.astype(float),
                         "support": support.astype(int), "auc": auc, "average_precision": ap})


def metric_key(label) -> str:
    """A class label as the tail of an MLflow metric key: letters, digits, `_`, `-` and `.` kept,
    anything else `_`."""
    text = re.sub(r"[^A-Za-z0-9_.\-]", "_", str(_plain(label)))
    return text or "_"


def class_keys(classes) -> list[str]:
    """metric_key of each class, made unique where two labels sanitise alike (`a b`, `a_b`: the
    second becomes `a_b_2`)."""
    keys, seen = [], set()
    for label in classes:
        key, n = metric_key(label), 1
        while key in seen:
            n += 1
            key = f"{metric_key(label)}_{n}"
        seen.add(key)
        keys.append(key)
    return keys


def _per_class_metric_values(table: pd.DataFrame, classes) -> dict:
    out = {}
    for key, (_, row) in zip(class_keys(classes), table.iterrows()):
        for name in PER_CLASS_METRICS:
            out[f"test_{name}_class_{key}"] = float(row[name])
    return out


def worst_predictions(y_true, proba, classes, raw_x=None, meta: dict | None = None,
                      worst: int = WORST_ROWS) -> pd.DataFrame:
    """The `worst` test rows with the lowest probability of their true class, lowest first (ties by
    row): `row` (position in the test split), `true_label`, `predicted_label`,
    `predicted_probability`, `true_class_probability`, `correct`, then the input columns (images: an
    `image` thumbnail, a PIL image that mlflow.log_table stores as a file)."""
    y_true = np.asarray(y_true)
    true_p = _true_class_probability(y_true, proba, classes)
    predicted = predicted_labels(proba, classes)
    predicted_codes = pd.Categorical(predicted, categories=list(classes)).codes
    order = np.argsort(true_p, kind="stable")[:worst]
    frame = pd.DataFrame({
        "row": order.astype(int),
        "true_label": [_plain(v) for v in y_true[order]],
        "predicted_label": [_plain(v) for v in predicted[order]],
        "predicted_probability": proba[order, predicted_codes[order]].astype(float),
        "true_class_probability": true_p[order].astype(float),
        "correct": (y_true[order] == predicted[order]).astype(bool),
    })
    return _with_inputs(frame, order, raw_x, meta)


def _true_class_probability(y_true, proba, classes) -> np.ndarray:
    """Each row's probability of its own (true) class."""
    codes = pd.Categorical(y_true, categories=list(classes)).codes
    return proba[np.arange(len(y_true)), codes]


def worst_regression(y_true, predicted, raw_x=None, meta: dict | None = None, worst: int = WORST_ROWS) -> pd.DataFrame:
    """The `worst` test rows with the largest absolute error, largest first (ties by row)."""
    error = np.abs(predicted - y_true)
    order = np.argsort(-error, kind="stable")[:worst]
    frame = pd.DataFrame({"row": order.astype(int), "true_value": y_true[order].astype(float),
                          "predicted_value": predicted[order].astype(float),
                          "absolute_error": error[order].astype(float)})
    return _with_inputs(frame, order, raw_x, meta)


def _with_inputs(frame: pd.DataFrame, order, raw_x, meta) -> pd.DataFrame:
    if raw_x is None:
        return frame
    if (meta or {}).get("kind") == "image":
        images = np.asarray(raw_x)
        low, high = _pixel_range(images)
        frame["image"] = [_thumbnail(images[i], low, high) for i in order]
        return frame
    rows = raw_x if isinstance(raw_x, pd.DataFrame) else pd.DataFrame(np.asarray(raw_x))
    rows = _jsonable(rows.iloc[order].reset_index(drop=True))
    # An input column named like one of ours keeps its values under `input_<name>`.
    rows.columns = [f"input_{c}" if str(c) in frame.columns else str(c) for c in rows.columns]
    return pd.concat([frame, rows], axis=1)


def _log_regression(predicted, y_true, meta, raw_x, worst) -> list[str]:
    import mlflow

    figure = _prediction_error_figure(y_true, predicted)
    mlflow.log_figure(figure, PREDICTION_ERROR_PNG)
    _close(figure)
    mlflow.log_table(worst_regression(y_true, predicted, raw_x, meta, worst), artifact_file=WORST_TABLE)
    return [PREDICTION_ERROR_PNG, WORST_TABLE]


# --- figures -----------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _close(figure) -> None:
    _pyplot().close(figure)


def _classification_figures(y_true, proba, classes) -> dict:
    from sklearn.calibration import CalibrationDisplay
    from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

    plt = _pyplot()
    binary = len(classes) == 2
    # Two classes: the positive class's curve; more: one a class, one-vs-rest (a class the test split
    # lacks, or holds only, has no curve).
    curves = [(classes[1], 1)] if binary else list(zip(classes, range(len(classes))))
    curves = [(label, i) for label, i in curves if 0 < np.sum(y_true == label) < len(y_true)]
    figures = {}
    drawings = ((ROC_PNG, RocCurveDisplay, "ROC"), (PR_PNG, PrecisionRecallDisplay, "precision-recall"))
    for path, display, title in drawings:
        figure, ax = plt.subplots(figsize=(6, 5))
        if binary:
            for label, i in curves:
                display.from_predictions(y_true == label, proba[:, i], pos_label=True, name=f"class {label}", ax=ax,
                                         plot_chance_level=True, despine=True)
        elif curves:
            # One display of all the classes' curves (scikit-learn >= 1.9 takes lists): one legend, drawn
            # once, where a from_predictions a class redraws it every time.
            _one_vs_rest(display, y_true, proba, curves).plot(
                ax=ax, despine=True, curve_kwargs=[{"color": _colour(n, len(curves)), "linestyle": "-", "alpha": 1.0}
                                          for n in range(len(curves))])
        if len(curves) > LEGEND_CLASSES:
            ax.get_legend().remove()
        elif ax.get_legend() is not None:
            ax.legend(fontsize="small", loc="lower right" if display is RocCurveDisplay else "lower left")
        # The displays name the axes after the boolean target ("Positive label: True"); the classes say it.
        if display is RocCurveDisplay:
            ax.set_xlabel("false positive rate")
            ax.set_ylabel("true positive rate")
        else:
            ax.set_xlabel("recall")
            ax.set_ylabel("precision")
        ax.set_title(f"{title} on the test split" + ("" if binary else ", one-vs-rest"))
        figure.tight_layout()
        figures[path] = figure
    figure, ax = plt.subplots(figsize=(6, 5))
    if binary:
        CalibrationDisplay.from_predictions(y_true == classes[1], proba[:, 1], pos_label=True,
                                            n_bins=CALIBRATION_BINS, name=f"class {classes[1]}", ax=ax)
        ax.set_xlabel(f"predicted probability of class {classes[1]}")
        ax.set_ylabel(f"fraction of class {classes[1]}")
        ax.set_title("calibration on the test split")
    else:
        predicted = predicted_labels(proba, classes)
        CalibrationDisplay.from_predictions(y_true == predicted, proba.max(axis=1), pos_label=True,
                                            n_bins=CALIBRATION_BINS, name="top label", ax=ax)
        ax.set_xlabel("predicted class's probability (confidence)")
        ax.set_ylabel("fraction predicted right")
        ax.set_title("top-label calibration on the test split")
    figure.tight_layout()
    figures[CALIBRATION_PNG] = figure
    return figures


def _one_vs_rest(display, y_true, proba, curves):
    """A RocCurveDisplay or PrecisionRecallDisplay of one curve a class, each class against the rest,
    with the areas scikit-learn gives (roc_auc_score, average_precision_score)."""
    from sklearn import metrics

    names = [f"class {label}" for label, _ in curves]
    targets = [(y_true == label, proba[:, i]) for label, i in curves]
    if display is metrics.RocCurveDisplay:
        fpr, tpr, _ = zip(*(metrics.roc_curve(t, p) for t, p in targets))
        return display(fpr=list(fpr), tpr=list(tpr), name=names,
                       roc_auc=[metrics.roc_auc_score(t, p) for t, p in targets])
    precision, recall, _ = zip(*(metrics.precision_recall_curve(t, p) for t, p in targets))
    return display(precision=list(precision), recall=list(recall), name=names,
                   average_precision=[metrics.average_precision_score(t, p) for t, p in targets])


def _colour(n: int, count: int):
    plt = _pyplot()
    return plt.get_cmap("tab10" if count <= 10 else "tab20")(n % (10 if count <= 10 else 20))


def _prediction_error_figure(y_true, predicted):
    from sklearn.metrics import PredictionErrorDisplay

    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, kind, title in zip(axes, ("actual_vs_predicted", "residual_vs_predicted"),
                               ("predicted against actual", "residuals")):
        PredictionErrorDisplay.from_predictions(y_true, predicted, kind=kind, ax=ax, random_state=0)
        ax.set_title(f"{title} (test split)")
    figure.tight_layout()
    return figure


def _misclassified_grid(y_true, proba, classes, images):
    """Up to GRID_IMAGES misclassified test images, lowest probability of the true class first."""
    plt = _pyplot()
    predicted = predicted_labels(proba, classes)
    wrong = np.flatnonzero(y_true != predicted)
    wrong = wrong[np.argsort(_true_class_probability(y_true, proba, classes)[wrong], kind="stable")][:GRID_IMAGES]
    columns = 5
    rows = max(1, -(-len(wrong) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(2 * columns, 2.6 * rows), squeeze=False)
    low, high = _pixel_range(images)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong):
        ax.imshow(_display_image(images[i]), cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        ax.set_title(f"row {i}: true {y_true[i]}\npredicted {predicted[i]} ({proba[i].max():.2f})", fontsize=8)
    if not len(wrong):
        axes[0, 0].text(0, 0.5, f"all {len(y_true)} test rows classified right", fontsize=10)
    figure.suptitle(f"misclassified test images: {int(np.sum(y_true != predicted))} of {len(y_true)}")
    # Fixed margins: tight_layout on 25 axes costs more than drawing them.
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.9 / (2.6 * rows), hspace=0.45, wspace=0.1)
    return figure


# --- images and JSON ---------------------------------------------------------------------------


def _display_image(image: np.ndarray) -> np.ndarray:
    """H x W stays; H x W x 1 loses its channel; H x W x 3 (or 4) stays for imshow."""
    image = np.asarray(image, dtype="float64")
    if image.ndim == 3 and image.shape[-1] == 1:
        return image[..., 0]
    return image


def _pixel_range(images: np.ndarray) -> tuple[float, float]:
    finite = images[np.isfinite(images)] if images.size else np.zeros(1)
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    return low, high if high > low else low + 1.0


def _thumbnail(image: np.ndarray, low: float, high: float):
    from PIL import Image

    pixels = _display_image(image)
    pixels = np.clip((np.nan_to_num(pixels, nan=low) - low) / (high - low), 0, 1)
    picture = Image.fromarray((pixels * 255).round().astype("uint8"))
    scale = max(1, -(-THUMBNAIL_PIXELS // max(1, min(picture.size))))
    return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)


def _jsonable(frame: pd.DataFrame) -> pd.DataFrame:
    """Values that pandas writes as JSON: numpy scalars and categories as Python values, bytes as text."""
    frame = frame.copy()
    for column in frame.columns:
        values = frame[column]
        if isinstance(values.dtype, pd.CategoricalDtype):
            frame[column] = values.astype(object)
        elif values.dtype == object:
            frame[column] = values.map(lambda v: v.decode("utf-8", "replace") if isinstance(v, bytes) else _plain(v))
    return frame


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value
