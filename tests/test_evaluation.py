"""The test split's evaluation (tracking.evaluation): per-class metrics, curves and worst rows,
logged from a cheap real model's real predictions into a real run and read back from the store."""

import os

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn import datasets
from sklearn import metrics as sk
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import train_test_split

from pipelines.metrics import classification_scores
from tracking.evaluation import WORST_ROWS, class_keys, log_test_evaluation, metric_key


def _logged(run_id):
    """The run's metrics and its artifact paths, all levels."""
    client = mlflow.MlflowClient()
    paths, folders = set(), [None]
    while folders:
        for item in client.list_artifacts(run_id, folders.pop()):
            (folders.append(item.path) if item.is_dir else paths.add(item.path))
    return client.get_run(run_id).data.metrics, paths


def _table(run_id, name):
    return mlflow.load_table(f"evaluation/{name}.json", run_ids=[run_id])


@pytest.fixture(scope="module")
def digits():
    """A logistic regression's test probabilities on 8x8 digit images (N x H x W), 10 classes."""
    data = datasets.load_digits()
    x_train, x_test, y_train, y_test = train_test_split(data.images, data.target, test_size=360, random_state=0,
                                                        stratify=data.target)
    model = LogisticRegression(max_iter=300).fit(x_train.reshape(len(x_train), -1) / 16, y_train)
    flat = x_test.reshape(len(x_test), -1) / 16
    return x_test, y_test, model.predict_proba(flat), model.predict(flat)


def test_digits_per_class_metrics_curves_and_worst_images(digits):
    x_test, y_test, proba, predicted = digits
    meta = {"task": "classification", "kind": "image", "classes": list(range(10))}
    with mlflow.start_run() as run:
        log_test_evaluation(proba.astype("float32"), y_test, meta, x_test)
    metrics, paths = _logged(run.info.run_id)
    assert predicted.tolist() != y_test.tolist()  # some rows wrong, or the worst rows show nothing

    # Per class: scikit-learn's report on the same predictions, as metrics and as the table.
    report = sk.classification_report(y_test, predicted, output_dict=True, zero_division=0)
    for label in range(10):
        for name, key in (("precision", "precision"), ("recall", "recall"), ("f1_score", "f1-score"),
                          ("support", "support")):
            assert metrics[f"test_{name}_class_{label}"] == pytest.approx(report[str(label)][key]), (name, label)
    # Nothing else: the averaged test_* metrics are pipelines.metrics's alone.
    assert set(metrics) == {f"test_{n}_class_{c}" for n in ("precision", "recall", "f1_score", "support")
                            for c in range(10)}
    table = _table(run.info.run_id, "per_class_metrics")
    assert table["class"].tolist() == list(range(10))
    assert table["f1_score"].tolist() == pytest.approx([report[str(c)]["f1-score"] for c in range(10)])
    # One-vs-rest AUCs average to the macro AUC that test_auc is.
    assert table["auc"].mean() == pytest.approx(classification_scores(y_test, proba, range(10))["auc"])

    # The worst rows: lowest probability of the true class first, as numpy ranks them.
    true_p = proba[np.arange(len(y_test)), y_test]
    expected = np.argsort(true_p, kind="stable")[:WORST_ROWS]
    worst = _table(run.info.run_id, "worst_predictions")
    assert worst["row"].tolist() == expected.tolist()
    assert worst["true_class_probability"].tolist() == pytest.approx(true_p[expected].tolist(), rel=1e-5)
    assert worst["true_class_probability"].is_monotonic_increasing
    assert worst["true_label"].tolist() == y_test[expected].tolist()
    assert worst["predicted_label"].tolist() == predicted[expected].tolist()
    assert worst["predicted_probability"].tolist() == pytest.approx(proba[expected].max(axis=1).tolist(), rel=1e-5)
    assert worst["correct"].tolist() == (predicted[expected] == y_test[expected]).tolist()
    # Each row's thumbnail is a file of the run.
    images = worst["image"].tolist()
    assert all(image["type"] == "image" and image["filepath"] in paths for image in images)

    for name in ("per_class_metrics.json", "worst_predictions.json", "roc_curve.png", "precision_recall_curve.png",
                 "calibration_curve.png", "misclassified.png"):
        assert f"evaluation/{name}" in paths, name


def test_binary_table_keeps_the_raw_rows_and_the_positive_class():
    data = datasets.load_breast_cancer(as_frame=True)
    x_train, x_test, y_train, y_test = train_test_split(data.data, data.target.to_numpy(), test_size=0.2,
                                                        random_state=0)
    x_test = x_test.assign(site=np.where(np.arange(len(x_test)) % 2, "left", None))  # a text column with gaps
    model = LogisticRegression(max_iter=300).fit(x_train / x_train.max(), y_train)
    p = model.predict_proba(x_test.drop(columns="site") / x_train.max())[:, 1]
    meta = {"task": "classification", "kind": "table", "classes": [0, 1]}
    with mlflow.start_run() as run:
        log_test_evaluation(p.reshape(-1, 1), y_test, meta, x_test)  # a sigmoid column
    metrics, paths = _logged(run.info.run_id)

    predicted = (p >= 0.5).astype(int)  # how a sigmoid output is decoded
    # Class 1's scores are the binary test_precision, ... of pipelines.metrics.
    scores = classification_scores(y_test, np.stack([1 - p, p], axis=1), [0, 1])
    for name in ("precision", "recall", "f1_score"):
        assert metrics[f"test_{name}_class_1"] == pytest.approx(scores[name])
    assert metrics["test_precision_class_0"] == pytest.approx(sk.precision_score(y_test, predicted, pos_label=0))
    assert metrics["test_support_class_0"] == np.sum(y_test == 0)

    true_p = np.where(y_test == 1, p, 1 - p)
    expected = np.argsort(true_p, kind="stable")[:WORST_ROWS]
    worst = _table(run.info.run_id, "worst_predictions")
    assert worst["row"].tolist() == expected.tolist()
    assert worst["true_class_probability"].tolist() == pytest.approx(true_p[expected].tolist())
    # The input columns are the test rows as given, at those positions.
    raw = x_test.iloc[expected].reset_index(drop=True)
    pd.testing.assert_frame_equal(worst[list(data.data.columns)], raw[list(data.data.columns)], check_dtype=False)
    assert worst["site"].tolist() == raw["site"].tolist()  # the gaps as JSON nulls
    assert {"evaluation/roc_curve.png", "evaluation/calibration_curve.png"} <= paths
    assert "evaluation/misclassified.png" not in paths  # a table has no images


def test_regression_worst_rows_by_absolute_error():
    data = datasets.load_diabetes(as_frame=True)
    x_train, x_test, y_train, y_test = train_test_split(data.data, data.target.to_numpy(), test_size=0.2,
                                                        random_state=0)
    predicted = Ridge().fit(x_train, y_train).predict(x_test)
    with mlflow.start_run() as run:
        log_test_evaluation(predicted.reshape(-1, 1), y_test, {"task": "regression", "kind": "table", "classes": []},
                            x_test)
    metrics, paths = _logged(run.info.run_id)
    assert metrics == {}
    assert {"evaluation/prediction_error.png", "evaluation/worst_predictions.json"} <= paths
    worst = _table(run.info.run_id, "worst_predictions")
    error = np.abs(predicted - y_test)
    assert worst["absolute_error"].tolist() == pytest.approx(sorted(error, reverse=True)[:WORST_ROWS])
    rows = worst["row"].to_numpy()
    assert worst["true_value"].tolist() == pytest.approx(y_test[rows].tolist())
    assert worst["predicted_value"].tolist() == pytest.approx(predicted[rows].tolist())
    assert worst["bmi"].tolist() == pytest.approx(x_test["bmi"].iloc[rows].tolist())


def test_labels_become_metric_keys_and_a_missing_class_has_no_curve():
    data = datasets.load_iris()
    names = np.array(["a b", "a_b", "c/d"])
    x_train, x_test, y_train, y_test = train_test_split(data.data, data.target, test_size=0.3, random_state=0)
    proba = LogisticRegression(max_iter=300).fit(x_train, y_train).predict_proba(x_test)
    keep = y_test != 2  # the test split lacks the third class
    meta = {"task": "classification", "kind": "table", "classes": list(names)}
    with mlflow.start_run() as run:
        log_test_evaluation(proba[keep], names[y_test[keep]], meta, pd.DataFrame(x_test[keep]))
    metrics, paths = _logged(run.info.run_id)
    assert class_keys(names) == ["a_b", "a_b_2", "c_d"]
    assert metric_key("é/x y") == "__x_y"
    assert metrics["test_support_class_a_b"] == np.sum(y_test == 0)
    assert metrics["test_support_class_a_b_2"] == np.sum(y_test == 1)
    assert metrics["test_support_class_c_d"] == 0 and metrics["test_recall_class_c_d"] == 0
    table = _table(run.info.run_id, "per_class_metrics")
    assert table["class"].tolist() == list(names)
    assert np.isnan(table["auc"].iloc[2])
    assert "evaluation/roc_curve.png" in paths
    # Input columns named 0..3 (a DataFrame without names) come through as text.
    assert {"0", "1", "2", "3"} <= set(_table(run.info.run_id, "worst_predictions").columns)


def test_diverged_outputs_log_nothing():
    meta = {"task": "classification", "kind": "table", "classes": [0, 1]}
    with mlflow.start_run() as run:
        assert log_test_evaluation(np.array([[np.nan], [0.3]]), np.array([0, 1]), meta) == []
    metrics, paths = _logged(run.info.run_id)
    assert metrics == {} and paths == set()


def test_the_pictures_are_pngs(digits, tmp_path):
    from PIL import Image

    x_test, y_test, proba, _ = digits
    meta = {"task": "classification", "kind": "image", "classes": list(range(10))}
    with mlflow.start_run() as run:
        logged = log_test_evaluation(proba, y_test, meta, x_test, worst=3)
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="evaluation", dst_path=tmp_path)
    for path in logged:
        if path.endswith(".png"):
            with Image.open(os.path.join(local, os.path.basename(path))) as picture:
                assert picture.format == "PNG" and min(picture.size) >= 200, path
    assert len(_table(run.info.run_id, "worst_predictions")) == 3
