"""Logs every epoch's training and validation metrics to MLflow at step = the epoch's number (from 1)."""

from __future__ import annotations

import concurrent.futures
import json
import math
import os
import time

import keras
from mlflow import MlflowClient
from mlflow.entities import Metric

from tracking.callbacks._numbers import is_number
from tracking.epochs import FIRST_EPOCH, epoch_number


class MlflowMetricsLogger(keras.callbacks.Callback):
    """Logs every epoch's training and validation metrics with `step` = the epoch's number, from 1
    as Keras's progress bar counts (tracking.epochs).

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
            raise ValueError(f"train_size must be >= 0, got {train_size!r}")
        self.run_id = run_id
        self.train_size = train_size
        self.client = client or MlflowClient()
        # A local journal of the epochs sent (JSON lines): a process killed mid-fit and run again
        # (Keras's BackupAndRestore) re-sends what may not have arrived and skips epochs it holds.
        self.spool = spool
        self.error = None
        self.epochs_seen = 0
        self.first_epoch = None
        # Every epoch's values as logged ({epoch number: {name: value}}), those an earlier process
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
        self.epochs_seen = max(steps) if steps else 0
        return steps

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()
        self._learning_rate = _learning_rate(self.model)

    def on_epoch_end(self, epoch, logs=None):
        epoch = epoch_number(epoch)
        self.epochs_seen = max(self.epochs_seen, epoch)
        if self.first_epoch is None:
            self.first_epoch = epoch  # above 1 when BackupAndRestore restored an earlier process's epochs
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
        metrics = [Metric(k, float(v), timestamp, epoch) for k, v in values.items() if is_number(v)]
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
        """The run's whole history as Keras lays it out ({name: [value per epoch]}, the first epoch's
        at position 0); an epoch that lacks a name holds NaN there."""
        epochs = range(FIRST_EPOCH, max(self.logged) + 1) if self.logged else range(0)
        names = {name for values in self.logged.values() for name in values}
        return {name: [self.logged.get(e, {}).get(name, math.nan) for e in epochs] for name in sorted(names)}

    def raise_error(self):
        """Raise the error that stopped logging, if any (after the fit, so its model is kept)."""
        if self.error is not None:
            raise self.error


def _learning_rate(model):
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return None
    try:
        return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    except Exception:  # a schedule object: its value depends on the step
        return None
