"""Keeps the last N epochs' checkpoints on local disk during the fit and logs them once, at its end."""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref

import keras
from mlflow import MlflowClient

from tracking.callbacks.best_checkpoint import CHECKPOINT_DIR
from tracking.epochs import epoch_number

#: Where the kept epochs go in the run: checkpoints/last/epoch-007.keras is epoch 7 as Keras prints it.
LAST_DIR = f"{CHECKPOINT_DIR}/last"


def last_checkpoint_name(epoch: int) -> str:
    """The file of epoch number `epoch` (from 1), zero-padded so that the names sort by epoch."""
    return f"epoch-{epoch:03d}.keras"


class LastCheckpoints(keras.callbacks.Callback):
    """Saves the model at every epoch's end into a folder of its own, keeping the newest `keep`
    files (an older one is deleted as a newer one is saved), and logs them as
    `checkpoints/last/epoch-NNN.keras` with `publish`, once the fit is over.

    MLflow cannot delete a run's artifacts, so nothing is logged during the fit: the run ends up
    holding exactly the last `keep` epochs (and, beside them, the best checkpoint its own logger
    publishes). The owner calls `publish` after the fit returns, early stopping included; a transfer
    run is several Keras fits, one kept set across them. A fit that raises (a crash, a pruned trial)
    logs none; the folder goes when the callback does, or with `discard`.

    Place it after the callbacks that complete the epoch's logs and weights (the metrics logger), and
    before one that may raise to stop the fit (Optuna's pruning), so the epoch being judged is kept.
    """

    def __init__(self, run_id: str, keep: int, client: MlflowClient | None = None, folder: str | None = None):
        super().__init__()
        if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
            raise ValueError(f"keep must be a whole number >= 1, got {keep!r}")
        self.run_id, self.keep = run_id, keep
        self.client = client or MlflowClient()
        self.folder = tempfile.mkdtemp(prefix="fittrack-last-", dir=folder)
        self._discard = weakref.finalize(self, shutil.rmtree, self.folder, True)
        self.kept: list[int] = []  # epoch numbers, oldest first

    def on_epoch_end(self, epoch, logs=None):
        number = epoch_number(epoch)
        self.model.save(os.path.join(self.folder, last_checkpoint_name(number)))
        self.kept = [e for e in self.kept if e != number] + [number]
        while len(self.kept) > self.keep:
            os.remove(os.path.join(self.folder, last_checkpoint_name(self.kept.pop(0))))

    def publish(self) -> list[str]:
        """Log the kept epochs' checkpoints into the run (each once); return their artifact paths."""
        if self.kept:
            self.client.log_artifacts(self.run_id, self.folder, LAST_DIR)
        paths = [f"{LAST_DIR}/{last_checkpoint_name(e)}" for e in self.kept]
        self.discard()
        return paths

    def discard(self) -> None:
        """Remove the local folder (publishing after this logs nothing)."""
        self.kept = []
        self._discard()
