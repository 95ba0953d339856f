"""Metrics as scikit-learn defines them: the streaming Keras metrics against scikit-learn, and a
run's logged metrics recomputed with scikit-learn from its logged model on its logged split."""

import mlflow
import numpy as np
import pytest
from click.testing import CliRunner
from sklearn import metrics as sk

from pipelines.cli import cli
from pipelines.metrics import METRIC_AVERAGING_TAG
from pipelines.metrics import keras_metrics
from tracking.datasets import load_split
from tracking.features import prepare_features

FAST = ["--epochs", "3", "--quiet", "--tensorboard", "false"]


def _train(tracking, *args):
    result = CliRunner().invoke(cli, ["train", *FAST, *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return tracking.only_run("train")


def _outputs(run, part):
    """(labels, network outputs, meta) of a split part, from the run's logged model and split."""
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model").unwrap_python_model()
    data = load_split(run.data.params["split_run_id"])
    features = prepare_features(data.parts[part].x, model.meta, model.preprocessor)
    return data.parts[part].y, model.network.predict(features, verbose=0), model.meta


def _at_best_epoch(tracking, run, name):
    best = int(run.data.metrics["best_epoch"])
    return next(m.value for m in tracking.client.get_metric_history(run.info.run_id, name) if m.step == best)


def _feed(metric, y_true, y_pred, sample_weight=None, sizes=(7, 64, 1, 50)):
    """Feed the rows in batches of uneven sizes, as Keras does with a last short batch."""
    start = 0
    for size in (*sizes, len(y_true)):
        end = min(start + size, len(y_true))
        if end > start:
            metric.update_state(y_true[start:end], y_pred[start:end],
                                None if sample_weight is None else sample_weight[start:end])
        start = end
    return float(metric.result())


def _binary_expected(y, p):
    predicted = (p >= 0.5).astype(int)
    return {name: _sklearn(name, y, predicted, "binary") for name in ("accuracy", "precision", "recall", "f1_score")
            } | {"auc": sk.roc_auc_score(y, p), "cross_entropy": sk.log_loss(y, p)}


def test_streaming_metrics_equal_scikit_learn_binary():
    rng = np.random.default_rng(3)
    y = (rng.random(300) < 0.35).astype(int)
    p = np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1).astype("float32")
    p[:5] = 0.5  # a tie goes to the positive class, as the model's predicted label does
    expected, first_rows = _binary_expected(y, p), _binary_expected(y[:60], p[:60])
    for metric in keras_metrics("classification", 2):
        # Keras clips probabilities at 1e-7 where scikit-learn clips at float64's epsilon.
        tolerance = {"auc": 1e-3, "cross_entropy": 1e-5}.get(metric.name, 1e-6)
        got = _feed(metric, y.reshape(-1, 1).astype("float32"), p.reshape(-1, 1))
        assert got == pytest.approx(expected[metric.name], abs=tolerance), metric.name
        metric.reset_state()  # as Keras does between epochs
        got = _feed(metric, y[:60].reshape(-1, 1).astype("float32"), p[:60].reshape(-1, 1))
        assert got == pytest.approx(first_rows[metric.name], abs=tolerance), metric.name


def _sklearn(name, y, predicted, average, sample_weight=None):
    if name == "accuracy":
        return sk.accuracy_score(y, predicted, sample_weight=sample_weight)
    score = {"precision": sk.precision_score, "recall": sk.recall_score, "f1_score": sk.f1_score}[name]
    return score(y, predicted, average=average, zero_division=0, sample_weight=sample_weight)


def test_streaming_metrics_equal_scikit_learn_macro_over_five_classes():
    rng = np.random.default_rng(4)
    n = 400
    y = rng.integers(0, 4, n)  # class 4 never occurs
    logits = rng.normal(size=(n, 5))
    logits[np.arange(n), y] += 1.5
    # Neither class 3 nor class 4 is ever predicted: 3 still counts (it is a true label), 4 does not.
    logits[:, 3] = logits.min(axis=1) - 0.5
    logits[:, 4] -= 20
    p = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype("float32")
    predicted = p.argmax(axis=1)
    assert 3 not in predicted and 3 in y
    one_hot = np.eye(5, dtype="float32")[y]
    weights = rng.uniform(0.5, 2.0, n).astype("float32")
    for metric in keras_metrics("classification", 5):
        if metric.name == "auc":
            # Keras's per-label AUC of a label that never occurs is 0 where scikit-learn has none: use four.
            auc = next(m for m in keras_metrics("classification", 4) if m.name == "auc")
            got = _feed(auc, one_hot[:, :4], p[:, :4])
            assert got == pytest.approx(sk.roc_auc_score(y, p[:, :4], multi_class="ovr"), abs=1e-3)
            continue
        if metric.name == "cross_entropy":
            assert _feed(metric, one_hot, p) == pytest.approx(sk.log_loss(y, p, labels=range(5)), abs=1e-5)
            metric.reset_state()
            assert _feed(metric, one_hot, p, weights) == pytest.approx(
                sk.log_loss(y, p, labels=range(5), sample_weight=weights), abs=1e-5)
            continue
        assert _feed(metric, one_hot, p) == pytest.approx(_sklearn(metric.name, y, predicted, "macro"),
                                                          abs=1e-6), metric.name
        metric.reset_state()
        # Class weights reach Keras's metrics as sample weights.
        assert _feed(metric, one_hot, p, weights) == pytest.approx(
            _sklearn(metric.name, y, predicted, "macro", sample_weight=weights), abs=1e-5), metric.name


def test_binary_run_logs_what_scikit_learn_computes(tracking):
    run = _train(tracking, "--data", "builtin:breast_cancer")
    y, output, meta = _outputs(run, "test")
    positive = meta["classes"][1]
    p = output.reshape(-1)
    predicted = np.asarray(meta["classes"])[(p >= 0.5).astype(int)]
    logged = run.data.metrics
    expected = {"test_accuracy": sk.accuracy_score(y, predicted),
                "test_precision": sk.precision_score(y, predicted, pos_label=positive),
                "test_recall": sk.recall_score(y, predicted, pos_label=positive),
                "test_f1_score": sk.f1_score(y, predicted, pos_label=positive),
                "test_auc": sk.roc_auc_score(y == positive, p), "test_cross_entropy": sk.log_loss(y == positive, p)}
    for name, value in expected.items():
        assert logged[name] == pytest.approx(value, abs=1e-3), name
    assert run.data.tags[METRIC_AVERAGING_TAG] == f"binary, positive class {positive!r}"
    # Per epoch: the validation metrics of the best epoch, whose weights the logged model holds.
    y_val, output_val, _ = _outputs(run, "val")
    p_val = output_val.reshape(-1)
    predicted_val = np.asarray(meta["classes"])[(p_val >= 0.5).astype(int)]
    assert _at_best_epoch(tracking, run, "val_precision") == pytest.approx(
        sk.precision_score(y_val, predicted_val, pos_label=positive), abs=1e-3)
    assert _at_best_epoch(tracking, run, "val_f1_score") == pytest.approx(
        sk.f1_score(y_val, predicted_val, pos_label=positive), abs=1e-3)
    assert _at_best_epoch(tracking, run, "val_auc") == pytest.approx(sk.roc_auc_score(y_val == positive, p_val),
                                                                      abs=1e-3)
    # val_loss is the objective, against labels smoothed by label_smoothing as Keras smooths them
    # (towards 1/2); val_cross_entropy the plain log loss, what a baseline's val_loss is.
    smoothing = float(run.data.params["label_smoothing"])
    assert smoothing > 0
    target = (y_val == positive) * (1 - smoothing) + smoothing / 2
    p_clipped = np.clip(p_val.astype("float64"), 1e-7, 1 - 1e-7)
    smoothed = -np.mean(target * np.log(p_clipped) + (1 - target) * np.log(1 - p_clipped))
    assert _at_best_epoch(tracking, run, "val_loss") == pytest.approx(smoothed, abs=1e-4)
    assert _at_best_epoch(tracking, run, "val_cross_entropy") == pytest.approx(
        sk.log_loss(y_val == positive, p_val), abs=1e-4)
    # The baselines log the same metrics under the same names, defined the same way.
    baselines = {b.data.params["baseline"]: b for b in tracking.runs("baseline")}
    for baseline in baselines.values():
        assert baseline.data.tags[METRIC_AVERAGING_TAG] == run.data.tags[METRIC_AVERAGING_TAG]
        for name in ("accuracy", "precision", "recall", "f1_score", "auc", "cross_entropy"):
            assert f"val_{name}" in baseline.data.metrics and f"test_{name}" in baseline.data.metrics, name
    # The prior dummy predicts the majority class, the positive one here: recall 1, precision its share.
    dummy = baselines["dummy"].data.metrics
    assert np.mean(load_split(run.data.params["split_run_id"]).parts["train"].y == positive) > 0.5
    assert dummy["test_recall"] == 1.0
    assert dummy["test_precision"] == pytest.approx(np.mean(y == positive))
    assert dummy["test_auc"] == 0.5


def test_multiclass_run_whose_probabilities_never_pass_one_half(tracking):
    # One epoch at a tiny learning rate: softmax outputs near 1/10, so a 0.5 threshold (Keras's
    # Precision on one-hot outputs) would find no prediction at all, and log 0.
    run = _train(tracking, "--data", "builtin:digits", "--epochs", "1", "--learning-rate", "1e-7",
                 "--units", "8", "--layers", "1")
    y, p, meta = _outputs(run, "test")
    assert p.max(axis=1).max() < 0.5
    classes = np.asarray(meta["classes"])
    predicted = classes[p.argmax(axis=1)]
    logged = run.data.metrics
    expected = {"test_accuracy": sk.accuracy_score(y, predicted),
                "test_precision": sk.precision_score(y, predicted, average="macro", zero_division=0),
                "test_recall": sk.recall_score(y, predicted, average="macro", zero_division=0),
                "test_f1_score": sk.f1_score(y, predicted, average="macro", zero_division=0),
                "test_auc": sk.roc_auc_score(y, p, multi_class="ovr", average="macro", labels=classes)}
    for name, value in expected.items():
        assert logged[name] == pytest.approx(value, abs=1e-3), name
    assert logged["test_precision"] > 0 and logged["test_recall"] > 0
    assert run.data.tags[METRIC_AVERAGING_TAG] == "macro over 10 classes, AUC one-vs-rest"
    y_val, p_val, _ = _outputs(run, "val")
    predicted_val = classes[p_val.argmax(axis=1)]
    assert _at_best_epoch(tracking, run, "val_recall") == pytest.approx(
        sk.recall_score(y_val, predicted_val, average="macro", zero_division=0), abs=1e-3)
    assert _at_best_epoch(tracking, run, "val_precision") == pytest.approx(
        sk.precision_score(y_val, predicted_val, average="macro", zero_division=0), abs=1e-3)
    assert _at_best_epoch(tracking, run, "val_auc") == pytest.approx(
        sk.roc_auc_score(y_val, p_val, multi_class="ovr", labels=classes), abs=1e-3)


def test_regression_run_logs_what_scikit_learn_computes(tracking):
    run = _train(tracking, "--data", "builtin:diabetes")
    data = load_split(run.data.params["split_run_id"])
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    y, predicted = data.parts["test"].y, np.asarray(model.predict(data.parts["test"].x), dtype="float64")
    logged = run.data.metrics
    # In the target's own units: the raw rows through the logged model, against the raw targets.
    assert logged["test_r2_score"] == pytest.approx(sk.r2_score(y, predicted), abs=1e-3)
    assert logged["test_mae"] == pytest.approx(sk.mean_absolute_error(y, predicted), rel=1e-5)
    assert logged["test_mse"] == pytest.approx(sk.mean_squared_error(y, predicted), rel=1e-5)
    assert run.data.tags[METRIC_AVERAGING_TAG] == "none: regression"
