"""Keras callbacks that log to MLflow: every epoch's metrics, and the best checkpoint as it improves."""

from __future__ import annotations

import concurrent.futures
import json
import math
import os
import shutil
import tempfile
import time
import warnings

import keras
import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric

CHECKPOINT_DIR = "checkpoints"
BEST_CHECKPOINT = "best.keras"
BEST_INFO = "best.json"


class MlflowMetricsLogger(keras.callbacks.Callback):
    """Logs every epoch's training and validation metrics with `step` = epoch.

    Unlike mlflow.keras.MlflowCallback, validation metrics land at their epoch (not step 0,
    mlflow issue 14293). Each epoch's batch is sent in order from a background thread, so
    training never waits on the tracking server, and a server that is away is retried by
    MLflow's client (see tracking/outage.py). Once a batch fails for good the others fail at
    once, and the error waits in `error` until the fit has returned its model (`raise_error`).
    Also logs the learning rate in force during the epoch, epoch seconds and samples per second.
    """

    def __init__(self, run_id: str, train_size: int, client: MlflowClient | None = None, spool: str | None = None):
        super().__init__()
        if not run_id:
            raise ValueError(f"run_id must name an MLflow run, got {run_id!r}")
        if train_size < 0:
            raise ValueError(f"train_size must be >= 0, got {train_size}")
        self.run_id = run_id
        self.train_size = train_size
        self.client = client or MlflowClient()
        # A local journal of the epochs sent (JSON lines): a process killed mid-fit and run again
        # (Keras's BackupAndRestore) re-sends what may not have arrived and skips epochs it holds.
        self.spool = spool
        self.error = None
        self.epochs_seen = 0
        self.first_epoch = None
        # Every epoch's values as logged ({epoch: {name: value}}), those an earlier process
        # journaled included: the whole history of the run, whichever process ran each epoch.
        self.logged = {}
        self._sender = None
        # Set here, not only in on_train_begin: after a fit that failed before it began (a model
        # that could not be built), on_train_end must still work and let the real error through.
        self._pending = []
        self._journaled = set()
        self._epoch_start = None
        self._learning_rate = None

    def on_train_begin(self, logs=None):
        self._epoch_start = None
        self._learning_rate = None
        self._pending = []
        if self._sender is None:
            self._sender = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="fittrack-metrics")
        self._journaled = self._resend_journal() if self.spool else set()

    def _resend_journal(self) -> set:
        if not os.path.exists(self.spool):
            return set()
        steps, metrics = set(), []
        with open(self.spool) as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    break  # a line cut short by the kill: that epoch was never backed up either
                steps.add(entry["step"])
                self.logged[entry["step"]] = dict(entry["metrics"])
                metrics += [Metric(k, v, entry["timestamp"], entry["step"]) for k, v in entry["metrics"].items()]
        # The same key, step, timestamp and value again is stored once: re-sending is safe.
        for start in range(0, len(metrics), 500):
            self._pending.append(self._sender.submit(self._send, metrics[start:start + 500]))
        self.epochs_seen = max(steps) + 1 if steps else 0
        return steps

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()
        self._learning_rate = _learning_rate(self.model)

    def on_epoch_end(self, epoch, logs=None):
        self.epochs_seen = max(self.epochs_seen, epoch + 1)
        if self.first_epoch is None:
            self.first_epoch = epoch  # above 0 when BackupAndRestore restored an earlier process's epochs
        if epoch in self._journaled:
            return  # logged before the process was killed; this is its repeat after the restore
        seconds = time.perf_counter() - self._epoch_start
        values = {k: v for k, v in (logs or {}).items() if k != "learning_rate"}
        values["epoch_seconds"] = seconds
        values["samples_per_second"] = self.train_size / seconds if seconds > 0 else 0.0
        if self._learning_rate is not None:
            values["learning_rate"] = self._learning_rate
        timestamp = int(time.time() * 1000)
        # NaN and inf are logged as they are (MLflow's stores keep them): a diverged epoch shows.
        metrics = [Metric(k, float(v), timestamp, epoch) for k, v in values.items() if _is_number(v)]
        self.logged[epoch] = {m.key: m.value for m in metrics}
        if self.spool:
            with open(self.spool, "a") as f:
                f.write(json.dumps({"step": epoch, "timestamp": timestamp,
                                    "metrics": {m.key: m.value for m in metrics}}) + "\n")
                f.flush()
                os.fsync(f.fileno())
        self._pending.append(self._sender.submit(self._send, metrics))

    def _send(self, metrics):
        if self.error is not None:
            return  # the server is gone; the first error says so
        try:
            self.client.log_batch(self.run_id, metrics=metrics)
        except Exception as exc:
            from tracking import outage

            self.error = exc
            if outage.is_unreachable(exc):
                outage.give_up()

    def on_train_end(self, logs=None):
        for future in self._pending:
            future.result()
        self._pending = []

    def history(self) -> dict:
        """The run's whole history as Keras lays it out ({name: [value per epoch]}), from epoch 0;
        an epoch that lacks a name holds NaN there."""
        epochs = range(max(self.logged) + 1) if self.logged else range(0)
        names = {name for values in self.logged.values() for name in values}
        return {name: [self.logged.get(e, {}).get(name, math.nan) for e in epochs] for name in sorted(names)}

    def raise_error(self):
        """Raise the error that stopped logging, if any (after the fit, so its model is kept)."""
        if self.error is not None:
            raise self.error


class TrainEvaluation(keras.callbacks.Callback):
    """Evaluates a fixed sample of the training split in inference mode at each epoch's end and
    adds its loss to the epoch's logs as `train_eval_loss`.

    Keras's `loss` is measured in training mode (dropout on, BatchNormalization on batch
    statistics) and averaged while the weights moved; `val_loss` is the end-of-epoch model in
    inference mode. This gives the training side of that comparison, measured the way `val_loss`
    is, so over- and underfitting are judged like with like (tracking/diagnosis.py). Place it
    before the callbacks that log or read the epoch's logs.
    """

    def __init__(self, x, y, batch_size: int = 256, name: str = "train_eval"):
        super().__init__()
        if len(x) == 0 or len(x) != len(y):
            raise ValueError(f"need a non-empty sample with as many targets as rows, got {len(x)} and {len(y)}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive whole number, got {batch_size!r}")
        self.x, self.y, self.batch_size, self.name = x, y, batch_size, name

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        # The model's compiled predict step in inference mode, batch by batch, then its compiled
        # loss once (regularisation included, as in val_loss): what model.evaluate computes, without
        # the new data pipeline evaluate builds at every call nor eager forward passes, which cost
        # a small CNN a quarter of its epoch.
        outputs = [self.model.predict_on_batch(self.x[start:start + self.batch_size])
                   for start in range(0, len(self.x), self.batch_size)]
        predicted = outputs[0] if len(outputs) == 1 else np.concatenate(outputs)
        loss = self.model.compute_loss(x=self.x, y=self.y, y_pred=predicted)
        logs[f"{self.name}_loss"] = float(keras.ops.convert_to_numpy(loss))


class TerminateOnNaN(keras.callbacks.Callback):
    """Keras's TerminateOnNaN, checked at each epoch's end rather than each batch's: a per-batch
    check reads the loss back every step, which stops Keras dispatching batches ahead (it cost a
    small CNN on 2 cores about 4% of its fit), while a diverged epoch costs what a good one does.
    It stops the fit gracefully (every callback's on_train_end runs), without Keras's print:
    fittrack fails the run with one line that names the epoch and the learning rate instead."""

    def on_epoch_end(self, epoch, logs=None):
        if any(not _is_finite(value) for key, value in (logs or {}).items() if key.endswith("loss")):
            self.model.stop_training = True


def training_sample(n: int, size: int, seed: int):
    """Indices of a fixed, seeded sample of `size` of `n` training rows (all of them when fewer), in order."""
    import numpy as np

    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


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
        monitor = self.checkpoint.monitor
        if monitor not in (logs or {}):
            if not self._warned:
                warnings.warn(f"best checkpoint not logged: monitored metric '{monitor}' is not in the "
                              f"epoch's logs (available: {', '.join(sorted(logs or {}))})", stacklevel=2)
                self._warned = True
            return
        best = self.checkpoint.best
        if best is None or best == self._last_seen or not os.path.exists(self.checkpoint.filepath):
            return
        self._last_seen = best
        # A diverged model is never the best one, whatever the monitored metric says of it
        # (an AUC of NaN predictions can be finite).
        if not _is_finite(best) or not all(_is_finite(v) for k, v in logs.items() if k.endswith("loss")):
            return
        self.best_epoch, self.best_value = epoch, float(best)
        # Copy now, in this thread: ModelCheckpoint may overwrite the file next epoch.
        snapshot = os.path.join(self._staging, f"epoch-{epoch}")
        os.makedirs(snapshot)
        shutil.copyfile(self.checkpoint.filepath, os.path.join(snapshot, BEST_CHECKPOINT))
        with open(os.path.join(snapshot, BEST_INFO), "w") as f:
            json.dump({"epoch": epoch, "monitor": monitor, "mode": self.mode, "value": float(best)}, f)
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


def _learning_rate(model):
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return None
    try:
        return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    except Exception:  # a schedule object: its value depends on the step
        return None


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _is_finite(value) -> bool:
    return _is_number(value) and math.isfinite(float(value))
