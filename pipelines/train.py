"""The train step: a Keras fit with callbacks, every epoch and the best checkpoint tracked."""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field

from pipelines.errors import FittrackError
from pipelines.models import MODELS, OPTIMIZERS
from pipelines.params import DEFAULT_METRIC, DataParams, param
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
    learning_rate: float = param(1e-3, low=0, low_open=True)
    optimizer: str = param("adam", choices=OPTIMIZERS)
    l2: float = param(0.0, "L2 weight penalty.", low=0)
    # 0.125 of 8 px = 1 px on digits.
    augment: float = param(0.125, "CNN: random shifts while fitting, up to this share of the image (0: none).",
                           low=0, high=0.5, high_open=True)
    batch_norm: bool = param(True, "CNN: BatchNormalization after each convolution.")
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
    seed: int = DataParams.seed  # the data parameters' seed: one seed for the split and the fit
    resolved_model: str = field(default="", repr=False)

    def validate(self, task: str | None = None) -> None:
        _choice("model", self.model, MODELS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("class_weight", self.class_weight, CLASS_WEIGHTS)
        _choice("device", self.device, DEVICES)
        for name in ("layers", "units", "batch_size", "epochs"):
            _positive_int(name, getattr(self, name))
        for name in ("patience", "reduce_lr_patience"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise FittrackError(f"{name} must be a whole number >= 0, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise FittrackError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.learning_rate > 0:
            raise FittrackError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not self.l2 >= 0:
            raise FittrackError(f"l2 must be >= 0, got {self.l2}")
        if not 0.0 <= self.augment < 0.5:
            raise FittrackError(f"augment must be in [0, 0.5), got {self.augment}")
        if task is not None:
            accepted = [f"val_{m}" for m in metric_names(task)]
            if self.monitor not in accepted:
                raise FittrackError(
                    f"unknown monitor '{self.monitor}' for {task}; choose one of {', '.join(accepted)}"
                )
            if self.class_weight == "balanced" and task == "regression":
                raise FittrackError("class_weight 'balanced' needs a classification task, not regression")

    def params(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "resolved_model"}


def _choice(name, value, accepted):
    if value not in accepted:
        raise FittrackError(f"unknown {name} '{value}'; choose one of {', '.join(accepted)}")


def _positive_int(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise FittrackError(f"{name} must be a positive whole number, got {value!r}")


def resolve_model(config: TrainConfig, kind: str) -> str:
    if config.model == "auto":
        return "cnn" if kind == "image" else "mlp"
    if config.model == "cnn" and kind != "image":
        raise FittrackError("model 'cnn' needs image data (N x H x W [x C]); this data is tabular: use mlp or auto")
    return config.model


@dataclass
class Prepared:
    """The split as the network sees it, plus what the logged model needs to redo it."""

    features: dict
    targets: dict  # encoded for the loss
    labels: dict  # as the source had them
    meta: dict
    preprocessor: object
    image_scale: float
    raw_train_x: object = None  # a few of these rows become the model's input example


def prepare(data) -> Prepared:
    """Fit preprocessing on the training part only; apply it to all three."""
    from pipelines.preprocess import feature_types, image_scale, make_preprocessor
    from tracking.models import categorical_as_strings, encode_target, prepare_features

    train_x = data.parts["train"].x
    meta = {"kind": data.kind, "task": data.task, "classes": list(data.classes), "target": data.target}
    preprocessor, scale = None, 1.0
    if data.kind == "image":
        meta["input_shape"] = list(train_x.shape[1:])
        scale = image_scale(train_x)
    else:
        numeric, categorical = feature_types(train_x)
        meta.update(columns=list(map(str, train_x.columns)), categorical=categorical, coerced=list(data.coerced))
        preprocessor = make_preprocessor(train_x)
        preprocessor.fit(categorical_as_strings(train_x, categorical))
    features = {n: prepare_features(p.x, meta, preprocessor) for n, p in data.parts.items()}
    targets = {n: encode_target(p.y, meta) for n, p in data.parts.items()}
    labels = {n: p.y for n, p in data.parts.items()}
    return Prepared(features, targets, labels, meta, preprocessor, scale, raw_train_x=train_x)


def write_json(path: str, payload: dict) -> str:
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, default=str)
    return path


def temp_workdir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="fittrack-train-")
