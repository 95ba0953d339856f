"""The training configuration (every hyperparameter of a train run, checked as it is made) and the
model it resolves to for the data; the train step itself is pipelines/steps/train.py."""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field

from pipelines.errors import FittrackError
from pipelines.models import MODELS, OPTIMIZERS
from pipelines.params import DEFAULT_METRIC, DataParams, param
from tracking.fields import check_fields
from tracking.metric_names import metric_names

CLASS_WEIGHTS = ("none", "balanced")
DEVICES = ("auto", "cpu", "gpu")


@dataclass
class TrainConfig:
    """Every hyperparameter of a training run (logged as the run's params)."""

    model: str = param("auto", "auto: a CNN for images, an MLP for tables.", choices=MODELS)
    layers: int = param(2, "Hidden layers (MLP) or convolution blocks (CNN).", low=1)
    units: int = param(64, "Units per hidden layer (MLP) or filters of the first block (CNN, doubling).", low=1)
    dropout: float = param(0.2, low=0, high=1, high_open=True)
    # On a few hundred rows one MLP's test score moves with its initialisation by more than the gap
    # to a linear model: 8 members lifted diabetes's R² by 0.02 on average and 0.05 at worst over
    # seeds 1-3, for 0.001 of breast_cancer's AUC (benchmarks/quality.py, README).
    ensemble_size: int = param(8, "MLP: this many MLPs side by side in one network, their logits averaged "
                               "(TabM's MLP^k; 1: a single MLP).", low=1, before=1)
    # RealMLP's 0.1 for classification. benchmarks/quality.py, 0.1 against 0, mean / worst over seeds:
    # digits with epochs=4 0.9735 / 0.9666 against 0.9659 / 0.9610 (better on every seed); the
    # 60,000-row table 0.9754 / 0.9739 against 0.9737 / 0.9714; digits with 60 epochs 0.9937 / 0.9889
    # against 0.9944 / 0.9916 and breast_cancer's AUC 0.9966 / 0.9944 against 0.9964 / 0.9950, both
    # within a test row or two of each other.
    label_smoothing: float = param(0.1, "Classification: fit on labels smoothed by this share (Keras's "
                                   "label_smoothing); loss and val_loss are then the smoothed cross-entropy, "
                                   "cross_entropy the plain one. 0: none. Regression ignores it.", low=0, high=1,
                                   high_open=True, before=0.0)
    learning_rate: float = param(1e-3, low=0, low_open=True)
    # Polyak averaging over about an epoch of steps. benchmarks/quality.py, mean / worst over seeds 1, 2, 3,
    # 42: digits 0.9958 / 0.9944 against 0.9937 / 0.9889 without (above the SVM on every seed, and the fit
    # stops sooner), digits with epochs=4 0.9714 / 0.9610 against 0.9735 / 0.9666. Counted in epochs, not
    # as Keras's momentum per step: 0.99 (about 100 steps) still carried a 4-epoch fit's first weights,
    # 0.9464 / 0.9276, as BatchNormalization's 0.99 had. The CNN only: on the tables the MLP ensemble
    # scored lower with it (breast_cancer's AUC 0.9959 / 0.9924 against 0.9966 / 0.9944, diabetes's R²
    # 0.4141 / 0.3686 against 0.4248 / 0.4027, seeds 1-3).
    ema_epochs: float = param(1.0, "CNN: Keras's optimizer EMA (use_ema): every epoch is evaluated, checkpointed "
                              "and kept with the weights' exponential moving average over about this many epochs "
                              "of steps (momentum 1 - 1 / (ema_epochs x iterations_per_epoch), logged as "
                              "ema_momentum). 0: off.", low=0, before=0.0)
    optimizer: str = param("adam", choices=OPTIMIZERS)
    l2: float = param(0.0, "L2 weight penalty.", low=0)
    # 0.125 of 8 px = 1 px on digits.
    augment: float = param(0.125, "CNN: random shifts while fitting, up to this share of the image (0: none).",
                           low=0, high=0.5, high_open=True)
    batch_norm: bool = param(True, "CNN: BatchNormalization after each convolution.")
    # Keras's 0.99 averages over ~100 steps and keeps 22% of its start after 150 (4 epochs of digits):
    # short fits were scored on stale statistics (test accuracy 0.17-0.53 at epochs=4, 0.96-0.97 with
    # 0.9; the default 60 epochs gained too). 0.9 is PyTorch's momentum=0.1. benchmarks/quality.py.
    batch_norm_momentum: float = param(0.9, "CNN: BatchNormalization's moving-statistics momentum (Keras's "
                                       "default: 0.99, slow to settle on small data).", low=0, high=1,
                                       high_open=True)
    batch_size: int = param(32, "Rows per step; at most the training rows, or the run fails saying so.", low=1)
    epochs: int = param(60, "At most this many.", low=1)
    # Room for two or three ReduceLROnPlateau halvings before stopping; augmented epochs are noisy.
    patience: int = param(12, "EarlyStopping: epochs without improvement of --monitor before stopping.", low=0)
    reduce_lr_patience: int = param(4, "ReduceLROnPlateau patience; 0 turns it off.", low=0)
    monitor: str = param(DEFAULT_METRIC, "Validation metric for checkpoints and early stopping, e.g. val_loss, "
                         "val_accuracy, val_auc.")
    class_weight: str = param("none", "balanced weighs rare classes up (imbalanced data, where accuracy misleads).",
                              choices=CLASS_WEIGHTS)
    device: str = param("auto", "auto uses a GPU where there is one.", choices=DEVICES)
    mixed_precision: bool = param(False)
    xla: bool = param(False, "Compile with XLA.")
    tensorboard: bool = param(True, "Write TensorBoard logs (logged as the run's tensorboard/ artifacts).")
    # What the run keeps and records besides the fit; none of it changes an epoch.
    keep_checkpoints: int = param(0, "Keep the last N epochs' checkpoints besides the best, logged as "
                                  "checkpoints/last/epoch-NNN.keras (NNN: the epoch's number) when the fit ends, "
                                  "early or not; a pruned trial keeps none. 0: the best only.", low=0)
    system_metrics: bool = param(True, "Log MLflow's system metrics (system/*: CPU, memory, disk, network; GPU "
                                 "utilisation and memory where there is one) for every train and trial run.")
    # 2 s: a digits trial takes 4.3 s on average (129 s for 30 trials, README), so it gets two or three
    # samples, a pruned one of 1.5-2.5 s one or two; MLflow's default 10 s would leave most trials the one
    # sample taken as they end. A sample costs ~15 ms of I/O in its own thread (a status read, one batch
    # of 8 metrics; psutil's reads 0.1 ms) and starting and stopping ~50 ms (benchmarks/tracking_overhead.py).
    system_metrics_interval: float = param(2.0, "Seconds between system-metrics samples (a run also gets one "
                                           "as it ends).", low=0, low_open=True)
    seed: int = DataParams.seed  # the data parameters' seed: one seed for the split and the fit
    resolved_model: str = field(default="", repr=False)

    def __post_init__(self):
        check_fields(self)

    def check_task(self, task: str) -> None:
        """What the data's task allows, once it is known: the monitor, class weights."""
        accepted = [f"val_{m}" for m in metric_names(task)]
        if self.monitor not in accepted:
            raise FittrackError(f"monitor must be one of {', '.join(accepted)} for {task}, got {self.monitor!r}")
        if self.class_weight == "balanced" and task == "regression":
            raise FittrackError(f"class_weight must be none for regression, got {self.class_weight!r}")

    def params(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "resolved_model"}


def resolve_model(config: TrainConfig, kind: str) -> str:
    if config.model == "auto":
        return "cnn" if kind == "image" else "mlp"
    if config.model == "cnn" and kind != "image":
        raise FittrackError("model must be mlp or auto for tabular data, got 'cnn' (it needs images: N x H x W [x C])")
    return config.model


def write_json(path: str, payload: dict) -> str:
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, default=str)
    return path


def temp_workdir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="fittrack-train-")
