"""How an epoch is numbered wherever a user reads one: from 1, as Keras's progress bar counts
("Epoch 3/60" is epoch 3). The MLflow step of an epoch's metrics, `best_epoch`, `best.json`,
the diagnosis, the trials' Optuna steps, the plots, TensorBoard and `fittrack compare` all use
it, so the console, the UI and the records agree. Keras's callbacks receive the epoch's index,
from 0; this is the one place that turns it into the number."""

from __future__ import annotations

#: The number of a fit's first epoch.
FIRST_EPOCH = 1


def epoch_number(index: int) -> int:
    """The epoch that Keras's callbacks call `epoch` (its index from 0), as a user counts it."""
    return index + FIRST_EPOCH


def epoch_index(number: int) -> int:
    """The position of epoch `number` in a per-epoch list (a Keras history)."""
    return number - FIRST_EPOCH
