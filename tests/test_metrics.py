"""Metrics as scikit-learn defines them: every epoch's scores, and a run's logged metrics recomputed
with scikit-learn from its logged model on its logged split."""

import mlflow
import numpy as np
import pytest
from click.testing import CliRunner
from sklearn import metrics as sk

from pipelines.cli import cli
from pipelines.metrics import METRIC_AVERAGING_TAG
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


def test_epoch_scores_are_scikit_learn_on_the_network_outputs():
    from pipelines.metrics import output_scores

    rng = np.random.default_rng(3)
    labels = np.where(rng.random(300) < 0.35, "yes", "no")
    p = np.clip(rng.normal(0.3 + 0.4 * (labels == "yes"), 0.2), 0, 1).astype("float32")
    p[:5] = 0.5  # a tie goes to the positive class, as the model's predicted label does
    scores = output_scores(p.reshape(-1, 1), labels, {"task": "classification", "classes": ["no", "yes"]})
    predicted = np.where(p >= 0.5, "yes", "no")
    assert scores["precision"] == pytest.approx(sk.precision_score(labels, predicted, pos_label="yes"))
    assert scores["auc"] == pytest.approx(sk.roc_auc_score(labels == "yes", p))
    assert scores["cross_entropy"] == pytest.approx(sk.log_loss(labels == "yes", p))
    # Five classes of which the labels hold four, and neither class 3 nor 4 is ever predicted:
    # macro over the classes among true or predicted labels (3 counts, 4 does not); no AUC, as
    # scikit-learn defines none for a class that never occurs.
    n = 400
    y = rng.integers(0, 4, n)
    logits = rng.normal(size=(n, 5))
    logits[np.arange(n), y] += 1.5
    logits[:, 3] = logits.min(axis=1) - 0.5
    logits[:, 4] -= 20
    proba = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype("float32")
    scores = output_scores(proba, y, {"task": "classification", "classes": [0, 1, 2, 3, 4]})
    assert scores["recall"] == pytest.approx(sk.recall_score(y, proba.argmax(axis=1), average="macro",
                                                             zero_division=0))
    assert "auc" not in scores
    regression = output_scores(np.array([[1.0], [2.0], [4.0]]), np.array([1.0, 3.0, 3.0]), {"task": "regression"})
    assert regression == pytest.approx({"mse": 2 / 3, "mae": 2 / 3, "r2_score": sk.r2_score([1, 3, 3], [1, 2, 4])})


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
