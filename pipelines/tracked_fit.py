"""One Keras fit tracked in an MLflow run: every epoch, the best checkpoint, the diagnosis.

Shared by the train step and by every Optuna trial, so that a trial is tracked exactly as a
training run is. It talks to the run through its id (MlflowClient), not the fluent API, since a
trial's run is not the process's active run.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.entities import Metric

from pipelines import baselines as baseline_models
from pipelines import fit as fitting
from pipelines import metrics as fit_metrics
from pipelines import train as training
from pipelines.errors import FittrackError
from tracking.diagnosis import diagnose, loss_ceiling
from tracking.epochs import FIRST_EPOCH, epoch_index
from tracking.features import Prepared
from tracking.metric_names import mode_of

class LoggingFailed(Exception):
    """The fit ended but its epochs or best checkpoint did not reach the tracking store; the
    trained `model` is kept for whoever can save it elsewhere."""

    def __init__(self, model):
        super().__init__("the fit's metrics or best checkpoint could not be logged")
        self.model = model


@dataclass
class FitOutcome:
    model: object
    history: dict
    best_epoch: int | None
    best_value: float | None
    diagnosis: object


def fit_tracked(config: training.TrainConfig, prepared: Prepared, run_id: str, workdir: str,
                verbose: int | None = None, extra_callbacks: tuple = (), transfer=None,
                resume_dir: str | None = None, checkpoint_each_best: bool = True) -> FitOutcome:
    """Fit (from scratch, or from `transfer`'s loaded init model in phases) with every epoch tracked.

    With `resume_dir`, Keras's BackupAndRestore keeps the last epoch there, so the same run
    started again after a crash goes on from it; the folder is removed once the fit is logged.
    The outcome's history, diagnosis and `lowest_val_loss_epoch` then cover every epoch of the
    run, those of the process that was killed included.

    A fit whose loss turns NaN, infinite or a hundred times the dummy baseline's stops there and
    raises FittrackError naming the epoch and the learning rate, after tagging the run `diverged`.

    Without `checkpoint_each_best` (Optuna trials) the best epoch's weights are kept in memory and
    its checkpoint logged once at the end, so a fit that raises or is pruned logs none.
    """
    from tracking.callbacks import (BackupAndRestore, BestCheckpointLogger, BestWeightsLogger, LastCheckpoints,
                                    MlflowMetricsLogger)

    client = MlflowClient()
    client.set_tag(run_id, fit_metrics.METRIC_AVERAGING_TAG,
                   fit_metrics.averaging(prepared.meta["task"], prepared.meta["classes"]))
    # The yardstick of both the divergence check during the fit and the diagnosis after it.
    task, n_classes = prepared.meta["task"], len(prepared.meta["classes"])
    dummy_loss = baseline_models.dummy_loss(task, prepared.labels["train"], config.label_smoothing)
    floor = baseline_models.loss_floor(task, n_classes, config.label_smoothing)
    if transfer is not None and not checkpoint_each_best:
        raise ValueError("a transfer run's phases are several fits: it checkpoints each best epoch")
    callbacks, checkpoint = fitting.keras_callbacks(config, workdir, loss_ceiling(dummy_loss),
                                                    checkpoint=checkpoint_each_best)
    if checkpoint_each_best:
        # Right after the ModelCheckpoint it watches: it publishes the file that callback just saved.
        best_logger = BestCheckpointLogger(checkpoint, run_id, mode_of(config.monitor), client=client)
        callbacks.insert(callbacks.index(checkpoint) + 1, best_logger)
    else:
        best_logger = BestWeightsLogger(run_id, config.monitor, mode_of(config.monitor), client=client)
        callbacks.insert(0, best_logger)
    if transfer is not None:
        callbacks.insert(callbacks.index(best_logger) + 1, _carry_best(best_logger))
    spool = None
    if resume_dir:
        os.makedirs(resume_dir, exist_ok=True)
        spool = os.path.join(resume_dir, "metrics.jsonl")
    metrics_logger = MlflowMetricsLogger(run_id, len(prepared.labels["train"]), client=client, spool=spool)
    callbacks.append(metrics_logger)
    if resume_dir:
        # After the metrics logger: an epoch is journaled before it is backed up, so a restored
        # run never lacks an epoch it skips. Two backups: a kill during a save leaves a broken
        # file, and the one before is restored.
        callbacks.append(BackupAndRestore(os.path.join(resume_dir, "keras")))
    # The last epochs' checkpoints, logged once the fit is over (none when it raises: a pruned trial).
    last_kept = LastCheckpoints(run_id, config.keep_checkpoints, client, workdir) if config.keep_checkpoints else None
    if last_kept:
        callbacks.append(last_kept)
    # Pruning goes last: a pruned epoch is still logged, with its checkpoint, before it stops.
    callbacks.extend(extra_callbacks)
    try:
        model, _ = fitting.fit(config, prepared, callbacks, verbose=verbosity(verbose), transfer=transfer)
    except BaseException as exc:
        # Keras skips on_train_end when fit raises: publish the epochs and the best one so far anyway.
        metrics_logger.on_train_end()
        best_logger.wait(raise_errors=False)
        if isinstance(exc, Exception) and metrics_logger.logged:
            # A NaN epoch can raise on its way out (Optuna prunes a trial that reports NaN): then
            # the divergence is what the user must hear about.
            history = metrics_logger.history()
            diagnosis = _diagnose(history, config, dummy_loss, floor)
            if diagnosis.label == "diverged":
                _record_diagnosis(client, run_id, config, diagnosis, history, best_logger, metrics_logger,
                                  resume_dir, cause=exc)
        raise
    try:
        best_logger.wait()
        metrics_logger.raise_error()
        if last_kept:
            last_kept.publish()
    except Exception as exc:
        raise LoggingFailed(model) from exc
    if resume_dir and metrics_logger.first_epoch and metrics_logger.first_epoch > FIRST_EPOCH:
        client.set_tag(run_id, "fittrack.resumed_at_epoch", str(metrics_logger.first_epoch))
    # The metrics logger's record, not Keras's History: after a resume it holds the epochs the
    # killed process journaled too, where History has only this process's.
    history = metrics_logger.history()
    diagnosis = _diagnose(history, config, dummy_loss, floor)
    _record_diagnosis(client, run_id, config, diagnosis, history, best_logger, metrics_logger, resume_dir)
    if resume_dir:
        shutil.rmtree(resume_dir, ignore_errors=True)
    return FitOutcome(model, history, best_logger.best_epoch, best_logger.best_value, diagnosis)


def _diagnose(history: dict, config, dummy_loss: float, floor: float):
    return diagnose(history["loss"], history["val_loss"], dummy_loss,
                    train_eval_loss=history.get("train_eval_loss"), epochs=config.epochs, floor=floor)


def _record_diagnosis(client, run_id, config, diagnosis, history, best_logger, metrics_logger, resume_dir,
                      cause=None) -> None:
    """Log the fit's summary and its diagnosis; a diverged fit then raises one line naming the epoch
    and the learning rate in force then (the step's run ends FAILED with it; an Optuna trial fails)."""
    reason = diagnosis.reason
    if diagnosis.label == "diverged":
        rates = history.get("learning_rate", ())
        epoch = diagnosis.diverged_epoch
        index = epoch_index(epoch)
        rate = rates[index] if index < len(rates) and math.isfinite(rates[index]) else config.learning_rate
        reason = f"{diagnosis.reason} with learning_rate {rate:g}; lower the learning rate"
    summary = {"best_epoch": best_logger.best_epoch, f"best_{config.monitor}": best_logger.best_value,
               "epochs_run": metrics_logger.epochs_seen, "lowest_val_loss_epoch": diagnosis.best_epoch}
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in summary.items() if v is not None])
    client.set_tag(run_id, "diagnosis", diagnosis.label)
    client.set_tag(run_id, "diagnosis_reason", reason)
    if diagnosis.label != "diverged":
        return
    if resume_dir:
        # Nothing worth resuming: every epoch from here on would go on from NaN weights.
        shutil.rmtree(resume_dir, ignore_errors=True)
    raise FittrackError(reason) from cause


def _carry_best(best_logger):
    """A transfer run is several Keras fits: BestCheckpointLogger starts afresh at each, while
    ModelCheckpoint keeps its best across them. This keeps an earlier phase's best epoch when a
    later phase never beats it (place it after the logger)."""
    import keras

    class CarryBest(keras.callbacks.Callback):
        kept = (None, None)

        def on_train_begin(self, logs=None):
            if self.kept[0] is not None:
                best_logger.best_epoch, best_logger.best_value = self.kept

        def on_train_end(self, logs=None):
            self.kept = (best_logger.best_epoch, best_logger.best_value)

    return CarryBest()


def verbosity(verbose: int | None) -> int:
    if verbose is not None:
        return verbose
    # A progress bar redrawn per batch floods a log file; one line per epoch reads well there.
    return 1 if sys.stdout.isatty() else 2
