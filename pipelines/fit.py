"""The Keras fit: Keras's own callbacks, class weights, and the phases of a transfer run."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from tracking.metric_names import mode_of

if TYPE_CHECKING:
    from pipelines.train import TrainConfig
    from tracking.features import Prepared


def class_weights(config: TrainConfig, prepared: Prepared):
    if config.class_weight != "balanced":
        return None
    from sklearn.utils.class_weight import compute_class_weight

    from tracking.features import class_codes

    codes = class_codes(prepared.labels["train"], prepared.meta["classes"])
    weights = compute_class_weight("balanced", classes=np.unique(codes), y=codes)
    return {int(c): float(w) for c, w in zip(np.unique(codes), weights)}


#: Rows of the training split scored in inference mode at each epoch's end (`train_eval_loss`, the
#: training side of the diagnosis, and the training metrics): about a validation split's worth, a
#: fraction of an epoch.
TRAIN_EVAL_ROWS = 1000


def epoch_evaluation(config: TrainConfig, prepared: Prepared):
    """What scores every epoch: the validation split and a seeded sample of the training split, in
    inference mode, with scikit-learn's metrics (`val_*`; `train_eval_loss` and the training
    metrics beside Keras's own training `loss`)."""
    from pipelines.metrics import output_scores
    from tracking.callbacks import EpochEvaluation, EvaluatedPart, training_sample

    sample = training_sample(len(prepared.labels["train"]), TRAIN_EVAL_ROWS, config.seed)
    parts = [EvaluatedPart(prepared.features["val"], prepared.targets["val"], np.asarray(prepared.labels["val"]),
                           "val_loss", "val_"),
             EvaluatedPart(prepared.features["train"][sample], prepared.targets["train"][sample],
                           np.asarray(prepared.labels["train"])[sample], "train_eval_loss")]
    meta = prepared.meta
    return EpochEvaluation(parts, lambda output, labels: output_scores(output, labels, meta))


def fit(config: TrainConfig, prepared: Prepared, callbacks: list, verbose: int = 1, transfer=None):
    """Build, compile and fit; return (model, history dict). Best weights are restored.

    Keras runs no validation of its own: the epoch's scores are added to its logs by the first
    callback (`epoch_evaluation`), before any other reads them.

    With `transfer` (a resolved and loaded pipelines.transfer.Transfer) the network is its init
    model's body under a new head, fitted in phases: each phase is a Keras fit that goes on from
    the epoch the last one stopped at, so that the run holds one history with every epoch once.
    """
    import keras

    from pipelines.models import build_model, compile_model, ema_momentum
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
    steps = iterations_per_epoch(len(y_train), config.batch_size)
    # With the optimizer's EMA, the averaged weights are in the model from each epoch's end to the next
    # epoch's start (SwapEMAWeights first): what is evaluated, checkpointed and restored as the best.
    averaging = [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if ema_momentum(config, steps) else []
    callbacks = [*averaging, epoch_evaluation(config, prepared), *callbacks]
    for phase in phases:
        set_body_trainable(body, phase.train_body)
        # A change of `trainable` takes effect at compile; the phase's optimizer starts afresh too.
        compile_model(model, replace(config, learning_rate=phase.learning_rate), task, n_classes, steps)
        fitted = model.fit(
            prepared.features["train"], y_train,
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


def keras_callbacks(config: TrainConfig, workdir: str, loss_ceiling: float | None = None, checkpoint: bool = True):
    """Keras's own callbacks for the fit; returns (list, the ModelCheckpoint, None without
    `checkpoint`). A training loss above `loss_ceiling` ends the fit as a NaN one does."""
    import keras

    from tracking.callbacks import TensorBoard, TerminateOnNaN

    mode = mode_of(config.monitor)
    # Starting from the worst value rather than from none: otherwise the first epoch is saved as
    # the best whatever its value, NaN included, and a NaN best is never beaten.
    checkpoint = keras.callbacks.ModelCheckpoint(
        os.path.join(workdir, "best.keras"), monitor=config.monitor, mode=mode, save_best_only=True,
        initial_value_threshold=float("inf") if mode == "min" else float("-inf"),
    ) if checkpoint else None
    callbacks = [
        *([checkpoint] if checkpoint else []),
        keras.callbacks.EarlyStopping(monitor=config.monitor, mode=mode, patience=config.patience,
                                      restore_best_weights=True),
        # A NaN, infinite or exploded loss ends the fit at that epoch's end (gracefully: every
        # callback's on_train_end runs, so the epoch is logged); fit_tracked then fails the run as diverged.
        TerminateOnNaN(loss_ceiling),
    ]
    if config.reduce_lr_patience > 0:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor=config.monitor, mode=mode, patience=config.reduce_lr_patience, factor=0.5, min_lr=1e-6,
        ))
    if config.tensorboard:
        callbacks.append(TensorBoard(os.path.join(workdir, "tensorboard"), histogram_freq=0, write_graph=False))
    return callbacks, checkpoint


def iterations_per_epoch(n: int, batch_size: int) -> int:
    return -(-n // batch_size)
