"""The training rows as validation sees them: a sample scored in inference mode at each epoch's end."""

from __future__ import annotations

import keras
import numpy as np


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
        # Batches of one size (the last padded with the first rows, its outputs dropped): the
        # predict step is traced once per model, not again for a smaller last batch.
        n = len(x)
        self._size = -(-n // -(-n // batch_size))
        self._padded = np.concatenate([x, x[:self._size * -(-n // self._size) - n]]) if n % self._size else x

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        # The model's compiled predict step in inference mode, batch by batch, then its compiled
        # loss once (regularisation included, as in val_loss): what model.evaluate computes, without
        # the new data pipeline evaluate builds at every call nor eager forward passes, which cost
        # a small CNN a quarter of its epoch.
        n, size = len(self.x), self._size
        outputs = [self.model.predict_on_batch(self._padded[start:start + size]) for start in range(0, n, size)]
        predicted = (outputs[0] if len(outputs) == 1 else np.concatenate(outputs))[:n]
        loss = self.model.compute_loss(x=self.x, y=self.y, y_pred=predicted)
        logs[f"{self.name}_loss"] = float(keras.ops.convert_to_numpy(loss))


def training_sample(n: int, size: int, seed: int):
    """Indices of a fixed, seeded sample of `size` of `n` training rows (all of them when fewer), in order."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
