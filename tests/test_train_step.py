"""The train step in-process through `fittrack train`, against a real store."""

import json
import os
import re
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from pipelines.cli import cli
from tracking.diagnosis import LABELS

FAST = ["--epochs", "4", "--quiet", "--tensorboard", "false"]


def _train(*args):
    result = CliRunner().invoke(cli, ["train", *FAST, *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def _csv(tmp_path, n=160, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "income": rng.normal(50, 10, n),
        "rooms": rng.integers(1, 6, n),
        "city": rng.choice(["paris", "rome", "oslo"], n),
    })
    frame.loc[::7, "income"] = np.nan
    frame.loc[::11, "city"] = None
    frame["bought"] = np.where((frame["income"].fillna(50) > 50) | (frame["city"] == "rome"), "yes", "no")
    path = tmp_path / "rows.csv"
    frame.to_csv(path, index=False)
    return path, frame


def test_train_run_holds_everything(tracking):
    _train("--data", "builtin:breast_cancer", "--tensorboard", "true")
    run = tracking.only_run("train")
    client = tracking.client
    assert run.info.status == "FINISHED"
    params = run.data.params
    for key in ("learning_rate", "batch_size", "dropout", "optimizer", "iterations_per_epoch", "train_size",
                "val_size", "test_size", "split_run_id", "monitor", "epochs"):
        assert key in params, key
    assert int(params["iterations_per_epoch"]) == -(-int(params["train_size"]) // 32)
    epochs_run = int(run.data.metrics["epochs_run"])
    for name in ("loss", "accuracy", "precision", "recall", "f1_score", "auc", "val_loss", "val_accuracy",
                 "val_precision", "val_recall", "val_f1_score", "val_auc", "learning_rate", "epoch_seconds"):
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, name))
        assert steps == list(range(1, epochs_run + 1)), name  # numbered from 1, as Keras prints them
    for name in ("test_loss", "test_accuracy", "test_auc", "baseline_test_accuracy", "test_accuracy_margin"):
        assert name in run.data.metrics, name
    assert run.data.tags["diagnosis"] in LABELS
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"checkpoints", "plots", "tensorboard", "network"} <= artifacts
    # The Keras flavor loads in a process that never imported fittrack (no custom metric classes).
    code = ("import sys, mlflow, numpy as np; m = mlflow.keras.load_model(sys.argv[1]); "
            "print(m.predict(np.zeros((2, 30), 'float32'), verbose=0).shape, 'pipelines.metrics' in sys.modules)")
    loaded = subprocess.run([sys.executable, "-c", code, f"runs:/{run.info.run_id}/network"], capture_output=True,
                            text=True, timeout=300, env={**os.environ, "MLFLOW_TRACKING_URI": tracking.uri})
    assert loaded.stdout.strip() == "(2, 1) False", loaded.stderr[-2000:]
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/learning_curves.png", "plots/confusion_matrix.png"}
    # The test split's evaluation (tracking.evaluation, tests/test_evaluation.py) from the same outputs.
    assert "test_recall_class_1" in run.data.metrics and {
        f"evaluation/{name}" for name in ("per_class_metrics.json", "worst_predictions.json", "roc_curve.png",
                                          "precision_recall_curve.png", "calibration_curve.png")
    } <= {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    # The three parts are the run's dataset inputs.
    contexts = {i.tags[0].value for i in run.inputs.dataset_inputs}
    assert contexts == {"training", "validation", "testing"}
    # The baselines are a run of their own on the same split, each baseline nested under it.
    step = tracking.only_run("baselines")
    assert run.data.tags["fittrack.baselines_run_id"] == step.info.run_id
    assert step.data.params["split_run_id"] == run.data.params["split_run_id"]
    baselines = tracking.runs("baseline")
    assert {b.data.tags["mlflow.runName"] for b in baselines} == {
        "baseline-dummy", "baseline-linear", "baseline-svm", "baseline-hist_gradient_boosting"}
    assert all(b.data.tags["mlflow.parentRunId"] == step.info.run_id for b in baselines)
    best = max(baselines, key=lambda b: b.data.metrics["val_accuracy"])
    assert step.data.tags["best_baseline"] == best.data.params["baseline"]
    assert run.data.metrics["baseline_test_accuracy"] == best.data.metrics["test_accuracy"]
    assert run.data.metrics["test_accuracy_margin"] == pytest.approx(
        run.data.metrics["test_accuracy"] - best.data.metrics["test_accuracy"])


def test_best_checkpoint_is_best_validation_epoch_and_every_record_numbers_it_alike(tracking):
    # Not --quiet: Keras's console, one line per epoch off a terminal, is one of the records.
    result = CliRunner().invoke(cli, ["train", "--data", "builtin:iris", "--epochs", "6", "--tensorboard", "true"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run = tracking.only_run("train")
    history = tracking.client.get_metric_history(run.info.run_id, "val_loss")
    best = min(history, key=lambda m: m.value)
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="checkpoints")
    info = json.load(open(os.path.join(local, "best.json")))
    assert info["epoch"] == best.step == int(run.data.metrics["best_epoch"])
    assert info["value"] == pytest.approx(best.value)
    # "Epoch k/6" on the console is MLflow's step k, with the same val_loss.
    console = re.findall(r"Epoch (\d+)/6\n.*? val_loss: ([0-9.]+)", result.output)
    steps = {m.step: m.value for m in history}
    assert [int(k) for k, _ in console] == sorted(steps) == list(range(1, int(run.data.metrics["epochs_run"]) + 1))
    assert all(float(value) == pytest.approx(steps[int(k)], abs=1e-4) for k, value in console)
    # The diagnosis names the epoch of the lowest val_loss by the same number.
    lowest = int(run.data.metrics["lowest_val_loss_epoch"])
    assert lowest == best.step and f"epoch {lowest} " in run.data.tags["diagnosis_reason"]
    # So does TensorBoard.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="tensorboard/validation")
    events = EventAccumulator(board, size_guidance={"tensors": 0})
    events.Reload()
    assert [e.step for e in events.Tensors("epoch_loss")] == sorted(steps)


def test_model_predicts_from_raw_rows_with_categories_and_missing_values(tracking, tmp_path):
    path, frame = _csv(tmp_path)
    # A number column with a few strings in it (mixed_columns=numeric reads them as missing).
    frame["rooms"] = frame["rooms"].astype(object)
    frame.loc[[3, 50], "rooms"] = ["abc", "n/a?"]
    frame.to_csv(path, index=False)
    from pipelines.data import MixedColumnWarning

    with pytest.warns(MixedColumnWarning, match="column 'rooms' .* 'abc', 'n/a\\?'"):
        _train("--data", str(path), "--target", "bought")
    run = tracking.only_run("train")
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    raw = frame.drop(columns=["bought"]).iloc[:20]
    assert "abc" in set(raw["rooms"])
    predictions = np.asarray(model.predict(raw))
    assert predictions.shape == (20,)
    assert set(predictions) <= {"yes", "no"}
    assert model.metadata.get_input_schema().input_names() == ["income", "rooms", "city"]
    assert "input_example.json" in os.listdir(mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="network"))


def test_regression_logs_regression_metrics(tracking):
    _train("--data", "builtin:diabetes")
    run = tracking.only_run("train")
    for name in ("val_mse", "val_mae", "val_r2_score", "test_r2_score", "test_mae", "baseline_test_r2_score"):
        assert name in run.data.metrics, name
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    from sklearn.datasets import load_diabetes

    rows = load_diabetes(as_frame=True).data.iloc[:5]
    predicted = np.asarray(model.predict(rows))
    # In the target's own units (25..346), not standardised.
    assert predicted.shape == (5,) and predicted.mean() > 20


def test_split_is_reused_when_everything_matches(tracking):
    _train("--data", "builtin:iris", "--epochs", "1")
    _train("--data", "builtin:iris", "--epochs", "1")
    assert len(tracking.runs("split")) == 1
    train_runs = tracking.runs("train")
    assert len({r.data.params["split_run_id"] for r in train_runs}) == 1
    _train("--data", "builtin:iris", "--epochs", "1", "--seed", "7")
    assert len(tracking.runs("split")) == 2


def test_same_seed_same_metrics(tracking):
    _train("--data", "builtin:wine", "--epochs", "3")
    _train("--data", "builtin:wine", "--epochs", "3")
    first, second = tracking.runs("train")
    for name in ("val_loss", "test_accuracy", "test_loss"):
        assert first.data.metrics[name] == second.data.metrics[name], name


def test_image_npz_trains_a_cnn(tracking, tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    x = rng.normal(size=(90, 6, 6)).astype("float32") + y[:, None, None]
    np.savez(tmp_path / "images.npz", x=x, y=y)
    _train("--data", str(tmp_path / "images.npz"), "--epochs", "2", "--units", "4")
    run = tracking.only_run("train")
    assert run.data.params["resolved_model"] == "cnn"
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    assert np.asarray(model.predict(x[:4])).shape == (4,)
