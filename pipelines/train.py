"""The train step: a Keras fit with callbacks, every epoch and the best checkpoint tracked."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from pipelines.errors import FittrackError
from pipelines.models import MODELS, OPTIMIZERS
from tracking.metric_names import metric_names, mode_of

CLASS_WEIGHTS = ("none", "balanced")
DEVICES = ("auto", "cpu", "gpu")


@dataclass
class TrainConfig:
    """Every hyperparameter of a training run (logged as the run's params)."""

    model: str = "auto"
    layers: int = 2
    units: int = 64
    dropout: float = 0.2
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    l2: float = 0.0
    augment: float = 0.125  # CNN only: random shifts up to this share of the image (0.125 of 8 px = 1 px)
    batch_norm: bool = True  # CNN only: BatchNormalization after each convolution
    batch_size: int = 32
    epochs: int = 60
    # Room for two or three ReduceLROnPlateau halvings before stopping; augmented epochs are noisy.
    patience: int = 12
    reduce_lr_patience: int = 4
    monitor: str = "val_loss"
    class_weight: str = "none"
    device: str = "auto"
    mixed_precision: bool = False
    xla: bool = False
    tensorboard: bool = True
    seed: int = 42
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


def configure_device(config: TrainConfig) -> str:
    """Apply `device`, mixed precision and seeding; return a description of the device used."""
    if config.device == "cpu":
        # Only effective before TensorFlow starts; the CLI calls this before importing Keras.
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    import keras

    gpus = _gpus()
    if config.device == "gpu" and not gpus:
        raise FittrackError("device 'gpu' was asked for, but no GPU is visible; use device=auto or cpu")
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16" if gpus else "mixed_bfloat16")
    keras.utils.set_random_seed(config.seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        # Same parameters, same machine, same metrics: deterministic kernels cost little here.
        tf.config.experimental.enable_op_determinism()
    return f"GPU ({', '.join(gpus)})" if gpus and config.device != "cpu" else "CPU"


def _gpus() -> list[str]:
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_physical_devices("GPU")]
    if keras.backend.backend() == "jax":
        import jax

        return [str(d) for d in jax.devices() if d.platform == "gpu"]
    if keras.backend.backend() == "torch":
        import torch

        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return []


def class_weights(config: TrainConfig, prepared: Prepared):
    if config.class_weight != "balanced":
        return None
    from sklearn.utils.class_weight import compute_class_weight

    from tracking.models import class_codes

    codes = class_codes(prepared.labels["train"], prepared.meta["classes"])
    weights = compute_class_weight("balanced", classes=np.unique(codes), y=codes)
    return {int(c): float(w) for c, w in zip(np.unique(codes), weights)}


def fit(config: TrainConfig, prepared: Prepared, callbacks: list, verbose: int = 1, transfer=None):
    """Build, compile and fit; return (model, history dict). Best weights are restored.

    With `transfer` (a resolved and loaded pipelines.transfer.Transfer) the network is its init
    model's body under a new head, fitted in phases: each phase is a Keras fit that goes on from
    the epoch the last one stopped at, so that the run holds one history with every epoch once.
    """
    from pipelines.models import build_model, compile_model
    from pipelines.transfer import Phase, fit_probe, set_body_trainable, with_new_head

    task, n_classes = prepared.meta["task"], len(prepared.meta["classes"])
    y_train = prepared.targets["train"]
    target_mean = float(np.mean(y_train)) if task == "regression" else 0.0
    target_std = (float(np.std(y_train)) or 1.0) if task == "regression" else 1.0
    if transfer is None:
        model = build_model(config, prepared.features["train"].shape[1:], task, n_classes,
                            image_scale=prepared.image_scale, target_mean=target_mean, target_std=target_std)
        body, phases = [], [Phase(config.epochs, config.learning_rate, train_body=True)]
    else:
        model, body = with_new_head(transfer.network, task, n_classes, target_mean, target_std)
        if transfer.config.head_init == "probe":
            fit_probe(model, body, prepared.features["train"], y_train, task, target_mean, target_std,
                      class_weight=config.class_weight, seed=config.seed)
        phases = transfer.phases(config.epochs, config.learning_rate)
    history, best = {}, None
    for phase in phases:
        set_body_trainable(body, phase.train_body)
        # A change of `trainable` takes effect at compile; the phase's optimizer starts afresh too.
        compile_model(model, replace(config, learning_rate=phase.learning_rate), task, n_classes)
        fitted = model.fit(
            prepared.features["train"], y_train,
            validation_data=(prepared.features["val"], prepared.targets["val"]),
            initial_epoch=len(history.get("loss", ())), epochs=phase.epochs, batch_size=config.batch_size,
            shuffle=True, class_weight=class_weights(config, prepared), callbacks=callbacks, verbose=verbose,
        ).history
        for name, values in fitted.items():
            history.setdefault(name, []).extend(values)
        if len(phases) > 1:
            best = _best_phase(model, fitted.get(config.monitor), mode_of(config.monitor), best)
    if best is not None:
        model.set_weights(best[1])
    return model, history


def _best_phase(model, values, mode: str, best):
    """(value, weights) of the best phase so far. EarlyStopping restores only its own fit's best
    epoch, so a later phase that never beat an earlier one must not leave its weights in place."""
    if not values:
        return best
    value = min(values) if mode == "min" else max(values)
    if best is None or (value < best[0] if mode == "min" else value > best[0]):
        return value, model.get_weights()
    return best


def keras_callbacks(config: TrainConfig, workdir: str):
    """Keras's own callbacks for the fit; returns (list, the ModelCheckpoint)."""
    import keras

    from tracking.callbacks import TerminateOnNaN

    mode = mode_of(config.monitor)
    # Starting from the worst value rather than from none: otherwise the first epoch is saved as
    # the best whatever its value, NaN included, and a NaN best is never beaten.
    checkpoint = keras.callbacks.ModelCheckpoint(
        os.path.join(workdir, "best.keras"), monitor=config.monitor, mode=mode, save_best_only=True,
        initial_value_threshold=float("inf") if mode == "min" else float("-inf"),
    )
    callbacks = [
        checkpoint,
        keras.callbacks.EarlyStopping(monitor=config.monitor, mode=mode, patience=config.patience,
                                      restore_best_weights=True),
        # A NaN or infinite loss ends the fit at that batch (gracefully: every callback's
        # on_train_end runs, so the epoch is logged); fit_tracked then fails the run as diverged.
        TerminateOnNaN(),
    ]
    if config.reduce_lr_patience > 0:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor=config.monitor, mode=mode, patience=config.reduce_lr_patience, factor=0.5, min_lr=1e-6,
        ))
    if config.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(workdir, "tensorboard"),
                                                     histogram_freq=0, write_graph=False))
    return callbacks, checkpoint


def iterations_per_epoch(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


def evaluate_test(model, prepared: Prepared) -> tuple[dict, np.ndarray]:
    """The test split, touched once: `test_loss` from Keras (regularisation included, as in
    val_loss), the other `test_` metrics from scikit-learn on the predictions (pipelines.metrics,
    exact where the per-epoch AUC is approximate), and the predicted labels or values."""
    from pipelines.metrics import classification_scores, regression_scores
    from tracking.models import class_probabilities, decode_output

    features, meta, y_true = prepared.features["test"], prepared.meta, prepared.labels["test"]
    loss = model.evaluate(features, prepared.targets["test"], verbose=0, return_dict=True)["loss"]
    output = model.predict(features, verbose=0)
    predicted = decode_output(output, meta)
    if meta["task"] == "regression":
        scores = regression_scores(y_true, predicted)
    else:
        scores = classification_scores(y_true, class_probabilities(output, meta), meta["classes"])
    return {"test_loss": float(loss), **{f"test_{k}": v for k, v in scores.items()}}, predicted


def write_json(path: str, payload: dict) -> str:
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, default=str)
    return path


def temp_workdir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="fittrack-train-")
