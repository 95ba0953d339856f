"""Over- and underfitting, read off the learning curves."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Validation loss this far above its minimum, while training loss kept falling, is overfitting,
# provided the rise is also more than noise next to the dummy baseline's loss.
RISE_TOLERANCE = 0.10
RISE_SHARE_OF_DUMMY = 0.01
# A training loss still at this share of the dummy baseline's loss means the model learnt little.
UNDERFIT_SHARE = 0.8
# Validation loss this many times the training loss, by a margin that matters, is a gap.
GAP_RATIO = 2.0
GAP_SHARE_OF_DUMMY = 0.1


@dataclass
class Diagnosis:
    label: str  # "overfitting", "underfitting" or "good_fit"
    reason: str
    best_epoch: int


def diagnose(loss: list[float], val_loss: list[float], dummy_loss: float | None = None) -> Diagnosis:
    """Label a fit from its per-epoch training and validation losses.

    `dummy_loss` is the loss a constant prediction reaches on the training data (the prior's
    cross-entropy, or the target's variance), the yardstick for "both losses are high".
    """
    if not loss or len(loss) != len(val_loss):
        raise ValueError(f"need equal, non-empty loss curves, got {len(loss)} and {len(val_loss)} epochs")
    loss, val_loss = np.asarray(loss, float), np.asarray(val_loss, float)
    best = int(np.nanargmin(val_loss))
    final_train, best_val, last_val = loss[-1], val_loss[best], val_loss[-1]

    if dummy_loss is not None and dummy_loss > 0 and loss.min() > UNDERFIT_SHARE * dummy_loss:
        return Diagnosis("underfitting", (
            f"training loss never fell below {UNDERFIT_SHARE:.0%} of the dummy baseline's "
            f"({loss.min():.4g} vs {dummy_loss:.4g})"), best)
    noise = RISE_SHARE_OF_DUMMY * dummy_loss if dummy_loss else 0.0
    rose = last_val > best_val * (1 + RISE_TOLERANCE) and last_val - best_val > noise and loss[-1] < loss[best]
    if rose:
        return Diagnosis("overfitting", (
            f"validation loss rose from {best_val:.4g} at epoch {best} to {last_val:.4g} "
            f"while training loss fell to {final_train:.4g}"), best)
    gap = val_loss[best] - loss[best]
    scale = dummy_loss if dummy_loss else max(val_loss[best], 1e-12)
    if val_loss[best] > GAP_RATIO * loss[best] and gap > GAP_SHARE_OF_DUMMY * scale:
        return Diagnosis("overfitting", (
            f"at the best epoch {best} validation loss {val_loss[best]:.4g} is over "
            f"{GAP_RATIO:g}x training loss {loss[best]:.4g}"), best)
    return Diagnosis("good_fit", f"validation loss lowest at epoch {best} ({best_val:.4g}), close to training", best)
