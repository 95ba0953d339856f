import json
import os
import struct

import keras
import mlflow
import numpy as np
import pytest

from tracking.callbacks import BackupAndRestore, BestCheckpointLogger, MlflowMetricsLogger


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
        # Numbered as Keras's console prints them: "Epoch 1/5" is step 1.
        assert [p.step for p in sorted(points, key=lambda p: p.step)] == [1, 2, 3, 4, 5], name
    logged = sorted(client.get_metric_history(run.info.run_id, "val_loss"), key=lambda p: p.step)
    assert np.allclose([p.value for p in logged], history.history["val_loss"])


def test_best_checkpoint_is_the_best_epoch_and_loads(tracking, tmp_path):
    x, y, xv, yv = _data()
    with mlflow.start_run() as run:
        checkpoint, logger = _best_checkpoint(tmp_path, run)
        history = _model().fit(x, y, validation_data=(xv, yv), epochs=8, verbose=0,
                               callbacks=[checkpoint, logger])
    best_epoch = int(np.argmin(history.history["val_loss"])) + 1  # numbered from 1
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
    assert info["epoch"] == logger.best_epoch <= 4  # the crash came at the end of epoch 4 (index 3)
    assert os.path.getsize(os.path.join(local, "best.keras")) > 0


@pytest.mark.parametrize("rows", [100, 101])  # 101: the last batch is padded
def test_epoch_evaluation_scores_validation_and_a_training_sample_in_inference_mode(tracking, rows):
    from sklearn.metrics import accuracy_score, roc_auc_score

    from tracking.callbacks import EpochEvaluation, EvaluatedPart

    x, y, xv, yv = _data()
    keras.utils.set_random_seed(1)
    # Dropout makes Keras's training-mode `loss` differ from the same rows scored in inference mode.
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dropout(0.5), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="binary_crossentropy")

    def score(output, labels):
        return {"accuracy": accuracy_score(labels, output.reshape(-1) >= 0.5),
                "auc": roc_auc_score(labels, output.reshape(-1))}

    parts = [EvaluatedPart(xv, yv, yv.reshape(-1), "val_loss", "val_"),
             EvaluatedPart(x[:rows], y[:rows], y[:rows].reshape(-1), "train_eval_loss")]

    class Last(keras.callbacks.Callback):  # what the epoch's model predicts, after the evaluation
        def on_epoch_end(self, epoch, logs=None):
            self.val, self.train = model.predict(xv, verbose=0), model.predict(x[:rows], verbose=0)

    last = Last()
    with mlflow.start_run() as run:
        history = model.fit(x, y, epochs=3, batch_size=32, verbose=0, callbacks=[
            EpochEvaluation(parts, score, batch_size=64), last,
            MlflowMetricsLogger(run.info.run_id, train_size=len(x))]).history
    for name in ("val_loss", "val_accuracy", "val_auc", "train_eval_loss", "accuracy", "auc"):
        logged = sorted(tracking.client.get_metric_history(run.info.run_id, name), key=lambda m: m.step)
        assert [m.step for m in logged] == [1, 2, 3], name
        assert np.allclose([m.value for m in logged], history[name]), name
    assert history["val_auc"][-1] == pytest.approx(roc_auc_score(yv.reshape(-1), last.val.reshape(-1)))
    assert history["accuracy"][-1] == pytest.approx(accuracy_score(y[:rows].reshape(-1), last.train.reshape(-1) >= 0.5))
    assert history["val_loss"][-1] == pytest.approx(model.evaluate(xv, yv, verbose=0), rel=1e-5)
    assert history["train_eval_loss"][-1] == pytest.approx(model.evaluate(x[:rows], y[:rows], verbose=0), rel=1e-5)
    assert history["train_eval_loss"][-1] != pytest.approx(history["loss"][-1], rel=1e-3)


def test_a_nan_epoch_is_logged_and_never_the_best_checkpoint(tracking, tmp_path):
    from tracking.callbacks import TerminateOnNaN

    x, y, xv, yv = _data()
    y = y * 1e20  # mse on these targets overflows at once
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(1e9), loss="mse")
    with mlflow.start_run() as run:
        # Keras's own ModelCheckpoint, which saves a NaN first epoch as its best.
        checkpoint, logger = _best_checkpoint(tmp_path, run)
        metrics = MlflowMetricsLogger(run.info.run_id, train_size=len(x))
        history = model.fit(x, y, validation_data=(xv, yv * 1e20), epochs=5, verbose=0,
                            callbacks=[checkpoint, logger, metrics, TerminateOnNaN()]).history
    assert len(history["loss"]) == 1 and not np.isfinite(history["loss"][0])  # stopped in its first epoch
    logged = tracking.client.get_metric_history(run.info.run_id, "loss")
    # MLflow's SQL stores keep NaN, and inf as the largest float.
    assert len(logged) == 1 and (np.isnan(logged[0].value) or abs(logged[0].value) >= 1.7e308)
    assert logger.best_epoch is None
    assert tracking.client.list_artifacts(run.info.run_id, "checkpoints") == []


def test_history_covers_the_epochs_an_earlier_process_journaled(tracking, tmp_path):
    x, y, xv, yv = _data()
    journal = tmp_path / "metrics.jsonl"
    with mlflow.start_run() as run:
        first = MlflowMetricsLogger(run.info.run_id, train_size=len(x), spool=str(journal))
        _model().fit(x, y, validation_data=(xv, yv), epochs=2, verbose=0, callbacks=[first])
        # The process is killed; the next one goes on from epoch 2 with the same journal.
        again = MlflowMetricsLogger(run.info.run_id, train_size=len(x), spool=str(journal))
        resumed = _model().fit(x, y, validation_data=(xv, yv), initial_epoch=2, epochs=4, verbose=0,
                               callbacks=[again]).history
    whole = again.history()
    assert len(resumed["val_loss"]) == 2 and len(whole["val_loss"]) == 4
    assert whole["val_loss"][:2] == first.history()["val_loss"]
    assert np.allclose(whole["val_loss"][2:], resumed["val_loss"])
    logged = sorted(tracking.client.get_metric_history(run.info.run_id, "val_loss"), key=lambda m: m.step)
    assert np.allclose([m.value for m in logged], whole["val_loss"])


def test_callbacks_whose_fit_never_began_let_the_error_through(tmp_path):
    checkpoint = keras.callbacks.ModelCheckpoint(str(tmp_path / "best.keras"))
    logger = BestCheckpointLogger(checkpoint, "abc", mode="min")
    metrics = MlflowMetricsLogger("abc", train_size=1)
    metrics.on_train_end()
    logger.wait(raise_errors=True)
    assert logger.best_epoch is None and metrics.history() == {}


class _StopAt(keras.callbacks.Callback):
    """A process killed after this epoch's backup."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def _tiny_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    return model


@pytest.mark.parametrize("backup_class", [BackupAndRestore, keras.callbacks.BackupAndRestore],
                         ids=["fittrack", "keras"])
def test_a_backup_truncated_by_a_kill_mid_save_restores_the_one_before(tmp_path, backup_class):
    x, y = np.random.default_rng(0).normal(size=(32, 4)), np.zeros((32, 1))
    backup_dir = str(tmp_path / "backup")
    with pytest.raises(KeyboardInterrupt):
        _tiny_model().fit(x, y, epochs=6, verbose=0, callbacks=[BackupAndRestore(backup_dir), _StopAt(3)])
    # The kill came while epoch 3's weights were written: the HDF5 superblock still gives the end
    # of the file as it was early in the save (its end-of-file address, bytes 40-47 of a version 0
    # superblock), so the objects written after it lie beyond it, as in the failure seen.
    weights = os.path.join(backup_dir, "latest.weights.h5")
    with open(weights, "r+b") as f:
        assert f.read(9)[8] == 0
        f.seek(40)
        f.write(struct.pack("<Q", 2048))
    options = {} if backup_class is BackupAndRestore else {"double_checkpoint": True}
    fit = lambda: _tiny_model().fit(x, y, epochs=6, verbose=0, callbacks=[backup_class(backup_dir, **options)])
    if backup_class is keras.callbacks.BackupAndRestore:
        # What fittrack's class is for: Keras falls back to the backup before on OSError only.
        with pytest.raises(RuntimeError):
            fit()
        return
    history = fit()
    # Epoch 2's backup was restored: the fit goes on from epoch 3, not from the start.
    assert history.epoch == [3, 4, 5]


def test_best_weights_logger_publishes_the_best_epoch_once_at_the_end(tracking):
    from tracking.callbacks import BestWeightsLogger

    x, y, xv, yv = _data()
    model = _model()
    model.optimizer.learning_rate.assign(1.0)  # large steps: val_loss goes up and down
    with mlflow.start_run() as run:
        logger = BestWeightsLogger(run.info.run_id, "val_loss", mode="min")
        history = model.fit(x, y, validation_data=(xv, yv), epochs=8, verbose=0, callbacks=[logger]).history
    best_epoch = int(np.argmin(history["val_loss"])) + 1  # numbered from 1
    assert best_epoch != len(history["val_loss"]), "the check needs a best epoch before the last"
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="checkpoints")
    with open(os.path.join(local, "best.json")) as f:
        info = json.load(f)
    assert info["epoch"] == best_epoch == logger.best_epoch
    assert info["value"] == pytest.approx(min(history["val_loss"]))
    restored = keras.models.load_model(os.path.join(local, "best.keras"))
    assert restored.evaluate(xv, yv, verbose=0, return_dict=True)["loss"] == pytest.approx(info["value"], rel=1e-4)
    # The fitted model is left holding its best epoch, as EarlyStopping(restore_best_weights) leaves it.
    assert model.evaluate(xv, yv, verbose=0, return_dict=True)["loss"] == pytest.approx(info["value"], rel=1e-4)


def test_best_weights_logger_publishes_nothing_for_a_fit_that_raised(tracking):
    from tracking.callbacks import BestWeightsLogger

    x, y, xv, yv = _data()
    with mlflow.start_run() as run:
        logger = BestWeightsLogger(run.info.run_id, "val_loss", mode="min")
        with pytest.raises(RuntimeError):
            _model().fit(x, y, validation_data=(xv, yv), epochs=5, verbose=0, callbacks=[logger, _CrashAt(2)])
    assert logger.best_epoch is not None
    logger.wait()
    assert tracking.client.list_artifacts(run.info.run_id, "checkpoints") == []


def test_last_checkpoints_keeps_the_last_epochs_across_fits_and_logs_them_once(tracking, tmp_path):
    from tracking.callbacks import LastCheckpoints

    x, y, xv, yv = _data()
    model = _model()
    with mlflow.start_run() as run:
        kept = LastCheckpoints(run.info.run_id, 2, folder=str(tmp_path))
        # Two Keras fits going on from each other, as a transfer run's phases do: one kept set.
        first = model.fit(x, y, validation_data=(xv, yv), epochs=3, verbose=0, callbacks=[kept]).history
        assert sorted(os.listdir(kept.folder)) == ["epoch-002.keras", "epoch-003.keras"]
        assert tracking.client.list_artifacts(run.info.run_id) == []  # nothing logged during the fit
        second = model.fit(x, y, validation_data=(xv, yv), initial_epoch=3, epochs=5, verbose=0,
                           callbacks=[kept]).history
        paths = kept.publish()
    assert paths == ["checkpoints/last/epoch-004.keras", "checkpoints/last/epoch-005.keras"]
    listed = [a.path for a in tracking.client.list_artifacts(run.info.run_id, "checkpoints/last")]
    assert listed == paths
    assert not os.path.exists(kept.folder)
    # Epoch 4 (Keras's index 3, the second fit's first) is that epoch's model.
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=paths[0])
    val_losses = first["val_loss"] + second["val_loss"]
    assert keras.models.load_model(local).evaluate(xv, yv, verbose=0, return_dict=True)["loss"] == pytest.approx(
        val_losses[3], rel=1e-4)


def test_last_checkpoints_of_a_fit_that_raised_are_not_logged_and_go_with_the_callback(tracking, tmp_path):
    import gc

    from tracking.callbacks import LastCheckpoints

    x, y, xv, yv = _data()
    with mlflow.start_run() as run:
        kept = LastCheckpoints(run.info.run_id, 1, folder=str(tmp_path))
        with pytest.raises(RuntimeError):
            _model().fit(x, y, epochs=5, verbose=0, callbacks=[kept, _CrashAt(2)])
    folder = kept.folder
    assert os.listdir(folder) == ["epoch-003.keras"]  # the epoch being judged was kept, as a pruned trial's is
    assert tracking.client.list_artifacts(run.info.run_id) == []
    del kept
    gc.collect()
    assert not os.path.exists(folder)


@pytest.mark.parametrize("keep", [0, -1, 1.5, True])
def test_last_checkpoints_needs_a_positive_count(keep):
    from tracking.callbacks import LastCheckpoints

    with pytest.raises(ValueError, match="keep must be a whole number >= 1"):
        LastCheckpoints("r", keep)
