"""Keeps the best epoch's weights in memory and publishes its checkpoint once, when the fit ends."""

from __future__ import annotations

import os
import shutil
import tempfile

import keras
from mlflow import MlflowClient

from tracking.callbacks.best_checkpoint import (BEST_CHECKPOINT, CHECKPOINT_DIR, may_be_best, warn_monitor_missing,
                                                write_best_info)
from tracking.epochs import epoch_number


class BestWeightsLogger(keras.callbacks.Callback):
    """The best epoch's weights copied in memory as it improves (no file written during the fit);
    at the fit's end the model is given them back and `checkpoints/best.keras` and `best.json` are
    logged once, as BestCheckpointLogger's layout.

    For short fits that many run in turn (Optuna trials): Keras's ModelCheckpoint writes the
    whole model at every better epoch. A fit that ends without on_train_end (one that raises, a
    pruned trial) publishes nothing; a long fit that must keep its best epoch through a crash
    uses ModelCheckpoint and BestCheckpointLogger instead.
    """

    def __init__(self, run_id: str, monitor: str, mode: str, client: MlflowClient | None = None):
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.run_id, self.monitor, self.mode = run_id, monitor, mode
        self.client = client or MlflowClient()
        self.best_epoch = self.best_value = self.error = None
        self._weights = None

    def on_train_begin(self, logs=None):
        self.best_epoch = self.best_value = self.error = None
        self._weights = None
        self._warned = False

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            if not self._warned:
                warn_monitor_missing(self.monitor, logs)
                self._warned = True
            return
        value = logs[self.monitor]
        if not may_be_best(value, logs):
            return
        value = float(value)
        if self.best_value is None or (value < self.best_value if self.mode == "min" else value > self.best_value):
            self.best_epoch, self.best_value = epoch_number(epoch), value
            self._weights = self.model.get_weights()

    def on_train_end(self, logs=None):
        if self._weights is None:
            return
        self.model.set_weights(self._weights)
        staging = tempfile.mkdtemp(prefix="fittrack-best-")
        try:
            self.model.save(os.path.join(staging, BEST_CHECKPOINT))
            write_best_info(staging, self.best_epoch, self.monitor, self.mode, self.best_value)
            self.client.log_artifacts(self.run_id, staging, CHECKPOINT_DIR)
        except Exception as exc:  # raised by wait(), after the fit, so the trained model is kept
            self.error = exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def wait(self, raise_errors: bool = True):
        """Raise what publishing the checkpoint raised (the same call as BestCheckpointLogger's)."""
        if self.error is not None and raise_errors:
            raise self.error
