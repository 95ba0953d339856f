import json
import os

import keras
import mlflow
import numpy as np
import pytest

from tracking.callbacks import BestCheckpointLogger, MlflowMetricsLogger


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200, 4)).astype("float32")
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype("float32").reshape(-1, 1)
    return x[:150], y[:150], x[150:], y[150:]


def _model():
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="binary_crossentropy",
                  metrics=[keras.metrics.BinaryAccuracy(name="accuracy")])
    return model


def _best_checkpoint(tmp_path, run, monitor="val_loss", mode="min"):
    checkpoint = keras.callbacks.ModelCheckpoint(str(tmp_path / "best.keras"), monitor=monitor, mode=mode,
                                                 save_best_only=True)
    return checkpoint, BestCheckpointLogger(checkpoint, run.info.run_id, mode=mode)


def test_every_epoch_is_logged_at_its_step(tracking):
    x, y, xv, yv = _data()
    with mlflow.start_run() as run:
        history = _model().fit(x, y, validation_data=(xv, yv), epochs=5, batch_size=32, verbose=0,
                               callbacks=[MlflowMetricsLogger(run.info.run_id, train_size=len(x))])
    client = tracking.client
    for name in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "epoch_seconds",
                 "samples_per_second"):
        points = client.get_metric_history(run.info.run_id, name)
        assert [p.step for p in sorted(points, key=lambda p: p.step)] == [0, 1, 2, 3, 4], name
    logged = sorted(client.get_metric_history(run.info.run_id, "val_loss"), key=lambda p: p.step)
    assert np.allclose([p.value for p in logged], history.history["val_loss"])


def test_best_checkpoint_is_the_best_epoch_and_loads(tracking, tmp_path):
    x, y, xv, yv = _data()
    with mlflow.start_run() as run:
        checkpoint, logger = _best_checkpoint(tmp_path, run)
        history = _model().fit(x, y, validation_data=(xv, yv), epochs=8, verbose=0,
                               callbacks=[checkpoint, logger])
    best_epoch = int(np.argmin(history.history["val_loss"]))
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="checkpoints")
    with open(os.path.join(local, "best.json")) as f:
        info = json.load(f)
    assert info["epoch"] == best_epoch == logger.best_epoch
    assert info["monitor"] == "val_loss" and info["mode"] == "min"
    assert info["value"] == pytest.approx(min(history.history["val_loss"]))
    restored = keras.models.load_model(os.path.join(local, "best.keras"))
    assert restored.evaluate(xv, yv, verbose=0, return_dict=True)["loss"] == pytest.approx(info["value"], rel=1e-4)


def test_missing_monitor_warns_instead_of_crashing(tracking, tmp_path):
    x, y, _, _ = _data()
    with mlflow.start_run() as run:
        checkpoint, logger = _best_checkpoint(tmp_path, run, monitor="val_auc", mode="max")
        with pytest.warns(UserWarning, match="monitored metric 'val_auc' is not in the epoch's logs"):
            _model().fit(x, y, epochs=2, verbose=0, callbacks=[checkpoint, logger])
    assert logger.best_epoch is None


@pytest.mark.parametrize("make, message", [
    (lambda: MlflowMetricsLogger("", train_size=1), "run_id must name an MLflow run, got ''"),
    (lambda: MlflowMetricsLogger("abc", train_size=-1), "train_size must be >= 0, got -1"),
    (lambda: BestCheckpointLogger(object(), "abc", mode="min"), "must be a keras.callbacks.ModelCheckpoint"),
    (lambda: BestCheckpointLogger(keras.callbacks.ModelCheckpoint("x.keras"), "abc", mode="up"),
     "mode must be 'min' or 'max', got 'up'"),
])
def test_arguments_are_checked(make, message):
    with pytest.raises(ValueError, match=message):
        make()


class _CrashAt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("simulated crash")


def test_a_crashed_fit_still_holds_its_best_checkpoint(tracking, tmp_path):
    x, y, xv, yv = _data()
    with mlflow.start_run() as run:
        checkpoint, logger = _best_checkpoint(tmp_path, run)
        model = _model()
        with pytest.raises(RuntimeError, match="simulated crash"):
            model.fit(x, y, validation_data=(xv, yv), epochs=10, verbose=0,
                      callbacks=[checkpoint, logger, _CrashAt(3)])
        logger.wait(raise_errors=False)
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="checkpoints")
    info = json.load(open(os.path.join(local, "best.json")))
    assert info["epoch"] == logger.best_epoch <= 3
    assert os.path.getsize(os.path.join(local, "best.keras")) > 0
