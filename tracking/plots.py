"""The plots that go with a run: learning curves and, for classes, the test confusion matrix."""

from __future__ import annotations

import os

import numpy as np

from tracking.epochs import epoch_number


def learning_curves_png(history: dict, metric: str, path: str) -> str:
    """Train vs validation for the loss and `metric`, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in ("loss", metric) if n in history]
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        epochs = epoch_number(np.arange(len(history[name])))
        ax.plot(epochs, history[name], label=f"train {name}")
        if name == "loss" and len(history.get("train_eval_loss", ())) == len(epochs):
            # The training rows as validation sees them (dropout off, moving statistics): like with like.
            ax.plot(epochs, history["train_eval_loss"], linestyle="--", label="train loss (inference mode)")
        if f"val_{name}" in history:
            ax.plot(epochs, history[f"val_{name}"], label=f"validation {name}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def confusion_matrix_png(y_true, y_pred, labels: list, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(labels) + 2),) * 2)
    ConfusionMatrixDisplay.from_predictions(
        np.asarray(y_true).astype(str), np.asarray(y_pred).astype(str),
        labels=[str(label) for label in labels], ax=ax, colorbar=False,
    )
    ax.set_title("test split")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_plots(history: dict, metric: str, task: str, y_true, y_pred, labels, out_dir: str) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    paths = [learning_curves_png(history, metric, os.path.join(out_dir, "learning_curves.png"))]
    if task == "classification":
        paths.append(confusion_matrix_png(y_true, y_pred, labels, os.path.join(out_dir, "confusion_matrix.png")))
    return paths
