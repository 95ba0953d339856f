"""The metric names runs log, and which way each is better: what the steps and the run comparison share."""

from __future__ import annotations

#: The validation metric that guides training, tuning, registration and comparison by default.
DEFAULT_METRIC = "val_loss"


def metric_names(task: str) -> tuple[str, ...]:
    """Keras's names for the metrics a task logs (validation adds `val_`)."""
    if task == "regression":
        return ("loss", "mse", "mae", "r2_score")
    return ("loss", "accuracy", "precision", "recall", "f1_score", "auc", "cross_entropy")


# The score a task's models are ranked by on the test split, baselines and champions alike.
PRIMARY_METRIC = {"classification": "accuracy", "regression": "r2_score"}

# Metrics where bigger is better; the rest (loss, mse, mae) are minimised.
MAXIMISED = {"accuracy", "precision", "recall", "f1_score", "auc", "r2_score"}


def mode_of(monitor: str) -> str:
    """'max' or 'min': the direction in which `monitor` (val_ or test_ prefixed or not) improves."""
    return "max" if monitor.removeprefix("val_").removeprefix("test_") in MAXIMISED else "min"
