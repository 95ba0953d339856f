"""Publishes the best checkpoint to MLflow each time Keras's ModelCheckpoint saves a better epoch."""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import tempfile
import warnings

import keras
from mlflow import MlflowClient

from tracking.callbacks._numbers import is_finite
from tracking.epochs import epoch_number

CHECKPOINT_DIR = "checkpoints"
BEST_CHECKPOINT = "best.keras"
BEST_INFO = "best.json"


def warn_monitor_missing(monitor: str, logs: dict) -> None:
    warnings.warn(f"best checkpoint not logged: monitored metric '{monitor}' is not in the epoch's logs "
                  f"(available: {', '.join(sorted(logs))})", stacklevel=3)


def may_be_best(value, logs: dict) -> bool:
    """A diverged model is never the best one, whatever the monitored metric says of it (an AUC of
    NaN predictions can be finite)."""
    return is_finite(value) and all(is_finite(v) for k, v in logs.items() if k.endswith("loss"))


def write_best_info(folder: str, epoch: int, monitor: str, mode: str, value: float) -> None:
    """`best.json` beside `best.keras`: which epoch it is (its number, from 1) and by what it was chosen."""
    with open(os.path.join(folder, BEST_INFO), "w") as f:
        json.dump({"epoch": epoch, "monitor": monitor, "mode": mode, "value": float(value)}, f)


class BestCheckpointLogger(keras.callbacks.Callback):
    """Publishes `checkpoints/best.keras` and `best.json` each time Keras's ModelCheckpoint
    saves a better epoch, so a crashed run still holds the best epoch so far.

    It watches the ModelCheckpoint passed in (place it after that callback). Uploads run in a
    background thread; a newer checkpoint replaces one still waiting to upload.
    """

    def __init__(self, checkpoint: keras.callbacks.ModelCheckpoint, run_id: str, mode: str,
                 client: MlflowClient | None = None):
        super().__init__()
        if not isinstance(checkpoint, keras.callbacks.ModelCheckpoint):
            raise ValueError(f"checkpoint must be a keras.callbacks.ModelCheckpoint, got {checkpoint!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.checkpoint = checkpoint
        self.run_id = run_id
        self.mode = mode
        self.client = client or MlflowClient()
        # Set here too, so that `wait` after a fit that failed before it began is a no-op.
        self.best_epoch = None
        self.best_value = None
        self.error = None
        self._future = None
        self._executor = None
        self._staging = None

    def on_train_begin(self, logs=None):
        self.best_epoch = None
        self.best_value = None
        self.error = None
        self._last_seen = self.checkpoint.best
        self._staging = tempfile.mkdtemp(prefix="fittrack-best-")
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="fittrack-ckpt")
        self._future = None
        self._warned = False

    def on_epoch_end(self, epoch, logs=None):
        logs, monitor = logs or {}, self.checkpoint.monitor
        if monitor not in logs:
            if not self._warned:
                warn_monitor_missing(monitor, logs)
                self._warned = True
            return
        best = self.checkpoint.best
        if best is None or best == self._last_seen or not os.path.exists(self.checkpoint.filepath):
            return
        self._last_seen = best
        if not may_be_best(best, logs):
            return
        epoch = epoch_number(epoch)
        self.best_epoch, self.best_value = epoch, float(best)
        # Copy now, in this thread: ModelCheckpoint may overwrite the file next epoch.
        snapshot = os.path.join(self._staging, f"epoch-{epoch}")
        os.makedirs(snapshot)
        shutil.copyfile(self.checkpoint.filepath, os.path.join(snapshot, BEST_CHECKPOINT))
        write_best_info(snapshot, epoch, monitor, self.mode, best)
        if self._future is not None:
            self._future.cancel()  # not started yet: the newer checkpoint supersedes it
        self._future = self._executor.submit(self._upload, snapshot)

    def _upload(self, snapshot):
        try:
            self.client.log_artifacts(self.run_id, snapshot, CHECKPOINT_DIR)
        except Exception as exc:
            from tracking import outage

            if outage.is_unreachable(exc):
                outage.give_up()
            raise
        shutil.rmtree(snapshot, ignore_errors=True)

    def on_train_end(self, logs=None):
        # A failed upload is raised after the fit (`wait` again), so the trained model is kept.
        self.wait(raise_errors=False)

    def wait(self, raise_errors: bool = True):
        """Block until the newest checkpoint is uploaded; raise what the upload raised.

        Safe to call again, and called by the train step when the fit itself fails, so that a
        crashed run still ends up holding its best epoch.
        """
        if self._executor is None:
            return  # on_train_begin never ran: nothing was saved
        future, self._future = self._future, None
        try:
            if future is not None and not future.cancelled():
                future.result()
            if self.error is not None:
                raise self.error
        except Exception as exc:
            self.error = exc
            if raise_errors:
                raise
        finally:
            self._executor.shutdown(wait=True)
            shutil.rmtree(self._staging, ignore_errors=True)
