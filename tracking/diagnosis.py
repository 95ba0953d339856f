"""Divergence, under- and overfitting, read off the learning curves.

A pure function of per-epoch curves, so every rule can be tested on made-up numbers. The rules
compare like with like: the validation loss is measured in inference mode (no dropout,
BatchNormalization on its moving statistics), so the training side of a comparison is
`train_eval_loss`, the same model evaluated the same way on a fixed sample of the training split.
The loss Keras logs during training (dropout on, BatchNormalization on batch statistics, averaged
while the weights moved) stands in only when that curve is missing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tracking.epochs import epoch_number

LABELS = ("diverged", "undertrained", "underfitting", "overfitting", "good_fit")

# What counts as more than noise: a change in validation loss larger than this share of the
# dummy baseline's loss (the scale of "learnt nothing"), and than this share of the loss itself.
NOISE_SHARE_OF_DUMMY = 0.01
NOISE_SHARE_OF_LOSS = 0.01
# Still falling: the lowest validation loss is in the last STILL_FALLING_WINDOW epochs, and it is
# lower than the loss STILL_FALLING_WINDOW epochs before it by more than noise.
STILL_FALLING_WINDOW = 2
# Validation loss this far above its minimum (and by more than noise), while the training loss
# kept falling, is overfitting.
RISE_TOLERANCE = 0.10
# A training loss never below this share of the dummy baseline's loss: the model learnt little.
UNDERFIT_SHARE = 0.8
# Validation loss this many times the training loss at the best epoch, by a margin that matters
# next to the dummy baseline's loss, is a generalisation gap.
GAP_RATIO = 2.0
GAP_SHARE_OF_DUMMY = 0.1
# A finite training loss this many times the dummy baseline's has diverged as surely as a NaN one:
# a constant prediction does a hundred times better (an ensemble's averaged logits at a huge
# learning rate stay finite, at 1e28, where a single network's overflow).
DIVERGED_SHARE_OF_DUMMY = 100.0


def loss_ceiling(dummy_loss: float | None) -> float | None:
    """The training loss above which a fit has diverged; None without a dummy loss to scale it."""
    return DIVERGED_SHARE_OF_DUMMY * dummy_loss if dummy_loss and dummy_loss > 0 else None


@dataclass
class Diagnosis:
    label: str  # one of LABELS
    reason: str
    best_epoch: int | None  # the epoch (its number, from 1) of the lowest finite validation loss; None if none
    diverged_epoch: int | None = None  # its number, from 1


def diagnose(loss: list[float], val_loss: list[float], dummy_loss: float | None = None,
             train_eval_loss: list[float] | None = None, epochs: int | None = None,
             floor: float = 0.0) -> Diagnosis:
    """Label a fit from its per-epoch losses.

    `loss` is the training loss Keras logged, `val_loss` the validation loss, `train_eval_loss`
    the training sample's loss in inference mode. `dummy_loss` is the loss a constant prediction
    reaches on the training data (the prior's cross-entropy, or the target's variance), the
    yardstick for "high" and for noise. `epochs` is the most the fit could run: only a fit that
    ran them all can be undertrained (one that stopped before, EarlyStopping's verdict, cannot).
    The curves hold one value per epoch, the first epoch's first; the epochs the diagnosis names
    are numbered from 1, as Keras prints them (tracking.epochs).
    `floor` is the loss a perfect prediction still has (with label smoothing, the smoothed
    targets' entropy): shares and ratios are taken of the loss above it, so that a floor of 0.5
    does not hide a validation loss of 1.0 against a training loss of 0.5.
    """
    if not loss or len(loss) != len(val_loss):
        raise ValueError(f"need equal, non-empty loss curves, got {len(loss)} and {len(val_loss)} epochs")
    if train_eval_loss is not None and len(train_eval_loss) != len(loss):
        raise ValueError(f"train_eval_loss has {len(train_eval_loss)} epochs, loss {len(loss)}")
    loss, val_loss = np.asarray(loss, float), np.asarray(val_loss, float)
    train = np.asarray(train_eval_loss, float) if train_eval_loss is not None else loss
    train_name = "training loss (inference mode)" if train_eval_loss is not None else "training loss"
    n = len(loss)
    finite_val = np.isfinite(val_loss)
    best = int(np.argmin(np.where(finite_val, val_loss, np.inf))) if finite_val.any() else None
    best_number = epoch_number(best) if best is not None else None

    # Diverged: a non-finite training loss at any epoch, or a validation loss that ended non-finite
    # (then, below, a finite training loss above the ceiling).
    # Nothing after that epoch means anything, so this rule comes first.
    bad = [(e, name, value) for e in range(n) for name, value in (("loss", loss[e]), ("val_loss", val_loss[e]))
           if not math.isfinite(value) and (name == "loss" or not finite_val[e:].any())]
    if bad:
        epoch, name, value = bad[0]
        epoch = epoch_number(epoch)
        return Diagnosis("diverged", f"training diverged at epoch {epoch}: {name} is {value}", best_number, epoch)
    ceiling = loss_ceiling(dummy_loss)
    if ceiling is not None and (loss > ceiling).any():
        index = int(np.argmax(loss > ceiling))
        return Diagnosis("diverged", (
            f"training diverged at epoch {epoch_number(index)}: loss is {loss[index]:.3g}, over "
            f"{DIVERGED_SHARE_OF_DUMMY:g}x the dummy baseline's {dummy_loss:.3g}"), best_number, epoch_number(index))

    noise = max(NOISE_SHARE_OF_DUMMY * (dummy_loss - floor) if dummy_loss else 0.0,
                NOISE_SHARE_OF_LOSS * (val_loss[best] - floor))
    best_val, last_val = val_loss[best], val_loss[-1]
    above = f", counted above the label-smoothing floor {floor:.4g}" if floor else ""

    # Undertrained: the fit used every epoch it had and validation loss was still falling at the
    # end, so no other verdict is due yet: more epochs would tell. Before "underfitting", since a
    # model still improving has not shown what it can learn.
    before = max(best - STILL_FALLING_WINDOW, 0)
    used_all = epochs is not None and n >= epochs
    if (used_all and best >= n - STILL_FALLING_WINDOW and last_val <= best_val + noise
            and val_loss[before] - best_val > noise):
        return Diagnosis("undertrained", (
            f"validation loss still falling at the last epoch: {val_loss[before]:.4g} at epoch "
            f"{epoch_number(before)} to {best_val:.4g} at epoch {best_number} of {n}; train for more epochs"),
            best_number)

    if (dummy_loss is not None and dummy_loss > floor
            and np.nanmin(train) - floor > UNDERFIT_SHARE * (dummy_loss - floor)):
        return Diagnosis("underfitting", (
            f"{train_name} never fell below {UNDERFIT_SHARE:.0%} of the dummy baseline's "
            f"({np.nanmin(train):.4g} vs {dummy_loss:.4g}{above}); validation loss lowest {best_val:.4g} "
            f"at epoch {best_number}"), best_number)

    if (last_val - floor > (best_val - floor) * (1 + RISE_TOLERANCE) and last_val - best_val > noise
            and train[-1] < train[best]):
        return Diagnosis("overfitting", (
            f"validation loss rose from {best_val:.4g} at epoch {best_number} to {last_val:.4g} at epoch "
            f"{epoch_number(n - 1)} while {train_name} fell from {train[best]:.4g} to {train[-1]:.4g}"), best_number)
    gap = best_val - train[best]
    scale = dummy_loss - floor if dummy_loss else max(best_val - floor, 1e-12)
    if best_val - floor > GAP_RATIO * (train[best] - floor) and gap > GAP_SHARE_OF_DUMMY * scale:
        return Diagnosis("overfitting", (
            f"at the best epoch {best_number} validation loss {best_val:.4g} is over {GAP_RATIO:g}x "
            f"{train_name} {train[best]:.4g}{above}"), best_number)
    return Diagnosis("good_fit", (
        f"validation loss lowest at epoch {best_number} ({best_val:.4g}), close to {train_name} "
        f"({train[best]:.4g})"), best_number)
