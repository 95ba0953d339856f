"""The diagnosis: its rules on made-up curves, then each verdict from a real small fit."""

import json
import math
import re

import numpy as np
import pytest
from click.testing import CliRunner

from pipelines.train import TrainConfig
from tracking.diagnosis import diagnose
from tracking.features import Prepared

# -- the rules, on made-up curves --------------------------------------------------------------


def test_rising_validation_loss_is_overfitting():
    loss = [1.0, 0.6, 0.4, 0.3, 0.2, 0.1]
    val = [1.0, 0.7, 0.5, 0.6, 0.7, 0.8]
    d = diagnose(loss, val, dummy_loss=2.3, epochs=6)
    assert d.label == "overfitting" and d.best_epoch == 3
    assert "rose from 0.5 at epoch 3 to 0.8 at epoch 6 while training loss fell from 0.4 to 0.1" in d.reason


def test_large_gap_is_overfitting():
    d = diagnose([0.5, 0.1, 0.05], [0.9, 0.8, 0.8], dummy_loss=1.0)
    assert d.label == "overfitting"
    assert "validation loss 0.8 is over 2x training loss 0.1" in d.reason


def test_both_losses_high_is_underfitting():
    d = diagnose([2.2, 2.1, 2.05], [2.2, 2.15, 2.1], dummy_loss=2.3, epochs=10)
    assert d.label == "underfitting"
    assert "never fell below 80% of the dummy baseline's (2.05 vs 2.3)" in d.reason


def test_close_curves_are_a_good_fit():
    d = diagnose([1.0, 0.5, 0.3, 0.25], [1.0, 0.55, 0.35, 0.31], dummy_loss=2.3)
    assert d.label == "good_fit" and d.best_epoch == 4
    assert "lowest at epoch 4 (0.31), close to training loss (0.25)" in d.reason


def test_noise_level_rise_is_not_overfitting():
    d = diagnose([0.5, 0.1, 0.05, 0.04], [0.5, 0.021, 0.025, 0.03], dummy_loss=2.3)
    assert d.label == "good_fit"


def test_curves_must_match():
    with pytest.raises(ValueError, match="need equal, non-empty loss curves, got 2 and 1"):
        diagnose([1.0, 0.5], [1.0])
    with pytest.raises(ValueError, match="train_eval_loss has 1 epochs, loss 2"):
        diagnose([1.0, 0.5], [1.0, 0.5], train_eval_loss=[1.0])


# The 3-epoch digits CNN of issue 10: BatchNormalization's moving statistics lag, so the model in
# inference mode scores 2.0 on its own training rows, as on validation; training-mode loss is 0.6.
BN_LAG = dict(loss=[1.82, 0.851, 0.616], val_loss=[2.181, 2.099, 1.966], train_eval_loss=[2.179, 2.099, 1.968],
              dummy_loss=2.30)


def test_like_with_like_no_gap_where_training_mode_loss_shows_one():
    d = diagnose(**BN_LAG, epochs=3)
    assert d.label == "undertrained" and d.best_epoch == 3
    assert d.reason == ("validation loss still falling at the last epoch: 2.181 at epoch 1 to 1.966 at epoch 3 "
                        "of 3; train for more epochs")
    # Had the fit been allowed more epochs (EarlyStopping ended it), it is not undertrained; the
    # gap is then measured against the inference-mode training loss, and there is none.
    d = diagnose(**BN_LAG, epochs=60)
    assert d.label == "underfitting" and "training loss (inference mode) never fell" in d.reason
    # Training-mode loss alone would have called it a generalisation gap.
    d = diagnose(BN_LAG["loss"], BN_LAG["val_loss"], BN_LAG["dummy_loss"])
    assert d.label == "overfitting"


def test_still_falling_by_noise_only_is_not_undertrained():
    d = diagnose([1.0, 0.3, 0.2, 0.2], [1.0, 0.3, 0.301, 0.2995], dummy_loss=2.3, epochs=4)
    assert d.label == "good_fit"


def test_a_gap_read_in_inference_mode():
    loss, val = [0.6, 0.3, 0.2, 0.2], [0.9, 0.8, 0.75, 0.76]
    assert diagnose(loss, val, 2.3, train_eval_loss=[0.7, 0.65, 0.6, 0.6]).label == "good_fit"
    d = diagnose(loss, val, 2.3, train_eval_loss=[0.3, 0.1, 0.05, 0.04])
    assert d.label == "overfitting"
    assert "validation loss 0.75 is over 2x training loss (inference mode) 0.05" in d.reason


@pytest.mark.parametrize("loss, val, epoch, reason, best", [
    ([1.0, 0.5, math.nan], [1.0, 0.6, math.nan], 3, "training diverged at epoch 3: loss is nan", 2),
    ([1.0, 0.5, 0.4], [1.0, math.inf, math.inf], 2, "training diverged at epoch 2: val_loss is inf", 1),
    ([math.inf], [math.nan], 1, "training diverged at epoch 1: loss is inf", None),
])
def test_non_finite_loss_is_diverged(loss, val, epoch, reason, best):
    d = diagnose(loss, val, dummy_loss=1.0, epochs=10)
    assert (d.label, d.diverged_epoch, d.reason, d.best_epoch) == ("diverged", epoch, reason, best)


def test_a_finite_loss_a_hundred_times_the_dummys_is_diverged():
    # An ensemble's averaged logits at a huge learning rate: finite, and hopeless.
    d = diagnose([0.7, 8.5e28, 3e29], [0.6, 5e28, 1e29], dummy_loss=0.69, epochs=3)
    assert (d.label, d.diverged_epoch) == ("diverged", 2)
    assert d.reason == "training diverged at epoch 2: loss is 8.5e+28, over 100x the dummy baseline's 0.69"
    # Just under the ceiling is a bad fit, not a divergence.
    assert diagnose([0.7, 68.0], [0.6, 60.0], dummy_loss=0.69).label != "diverged"


def test_a_nan_validation_epoch_that_recovered_is_not_diverged():
    d = diagnose([1.0, 0.5, 0.4, 0.3], [1.0, math.nan, 0.5, 0.35], dummy_loss=2.3)
    assert d.label == "good_fit" and d.best_epoch == 4


# -- each verdict from a real fit -------------------------------------------------------------


def _prepared(x, y, n_train, n_val=200, task="classification"):
    """Binary classification (or regression) rows as the train step prepares them (no
    preprocessing needed)."""
    x, y = x.astype("float32"), y.astype("int64" if task == "classification" else "float32")
    parts = {"train": slice(0, n_train), "val": slice(n_train, n_train + n_val), "test": slice(n_train, n_train + n_val)}
    return Prepared(features={k: x[s] for k, s in parts.items()},
                    targets={k: y[s].astype("float32").reshape(-1, 1) for k, s in parts.items()},
                    labels={k: y[s] for k, s in parts.items()},
                    meta={"kind": "table", "task": task, "classes": [0, 1] if task == "classification" else [],
                          "target": "y"},
                    preprocessor=None, image_scale=1.0)


def _fit(tracking, tmp_path, prepared, **params):
    import keras

    from pipelines.tracked_fit import fit_tracked

    config = TrainConfig(**{"model": "mlp", "tensorboard": False, "patience": 100, "reduce_lr_patience": 0,
                            "dropout": 0.0, **params})
    config.resolved_model = "mlp"
    keras.utils.set_random_seed(config.seed)
    run_id = tracking.client.create_run(tracking.experiment_id).info.run_id
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    outcome = fit_tracked(config, prepared, run_id, str(workdir), verbose=0)
    return outcome, tracking.client.get_run(run_id)


def _history(client, run_id, name):
    return [m.value for m in sorted(client.get_metric_history(run_id, name), key=lambda m: m.step)]


def test_a_memorising_network_is_overfitting(tracking, tmp_path):
    # 40 rows of noise with coin-flip labels: a wide network learns them by heart, and
    # validation loss can only get worse.
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(240, 20)), rng.integers(0, 2, 240)
    outcome, run = _fit(tracking, tmp_path, _prepared(x, y, n_train=40), units=256, layers=2,
                        learning_rate=0.01, epochs=20, batch_size=8)
    assert run.data.tags["diagnosis"] == "overfitting", run.data.tags["diagnosis_reason"]
    assert outcome.diagnosis.label == "overfitting"
    # The inference-mode training loss is logged at every epoch, beside val_loss.
    train_eval = _history(tracking.client, run.info.run_id, "train_eval_loss")
    # Memorised down to the floor of the label-smoothed loss: the entropy of the smoothed targets.
    smoothing = TrainConfig().label_smoothing  # the fit's, left at its default
    floor = -((1 - smoothing / 2) * np.log(1 - smoothing / 2) + smoothing / 2 * np.log(smoothing / 2))
    assert len(train_eval) == len(outcome.history["loss"]) == 20 and train_eval[-1] < floor + 0.05
    # Epochs are numbered from 1, as Keras's console counts them.
    assert run.data.metrics["lowest_val_loss_epoch"] == int(np.argmin(outcome.history["val_loss"])) + 1


def test_a_too_small_network_is_underfitting(tracking, tmp_path):
    # Inside or outside a circle: one ReLU unit sees the rows along one direction only.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(800, 2))
    y = (np.hypot(x[:, 0], x[:, 1]) < 1.18).astype(int)
    # One network of one unit: an ensemble of eight such networks sees eight directions.
    outcome, run = _fit(tracking, tmp_path, _prepared(x, y, n_train=600), units=1, layers=1, ensemble_size=1,
                        learning_rate=0.05, epochs=15, batch_size=32)
    assert run.data.tags["diagnosis"] == "underfitting", run.data.tags["diagnosis_reason"]
    assert "training loss (inference mode) never fell below 80% of the dummy baseline's" in \
        run.data.tags["diagnosis_reason"]


def test_a_run_cut_short_while_improving_is_undertrained(tracking, tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(800, 4))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    outcome, run = _fit(tracking, tmp_path, _prepared(x, y, n_train=600), units=16, layers=1,
                        learning_rate=1e-3, epochs=3)
    reason = run.data.tags["diagnosis_reason"]
    assert run.data.tags["diagnosis"] == "undertrained", reason
    assert reason.startswith("validation loss still falling at the last epoch") and "of 3" in reason


def test_a_failure_before_the_first_epoch_is_the_real_error(tracking, tmp_path):
    rng = np.random.default_rng(3)
    prepared = _prepared(rng.normal(size=(300, 4)), rng.integers(0, 2, 300), n_train=100)
    import keras

    from pipelines.tracked_fit import fit_tracked

    config = TrainConfig(tensorboard=False)
    config.resolved_model = "cnn"  # convolutions on table rows: the model cannot be built
    run_id = tracking.client.create_run(tracking.experiment_id).info.run_id
    keras.utils.set_random_seed(0)
    with pytest.raises(ValueError, match="conv_0") as raised:
        fit_tracked(config, prepared, run_id, str(tmp_path), verbose=0, resume_dir=str(tmp_path / "resume"))
    assert not isinstance(raised.value, AttributeError)
    assert tracking.client.get_run(run_id).data.metrics == {}


# One network overflows to NaN; an ensemble's averaged logits stay finite and explode.
@pytest.mark.parametrize("ensemble_size", ["1", "8"])
def test_a_diverging_learning_rate_fails_the_run_in_one_line(tracking, ensemble_size):
    from pipelines.cli import cli

    result = CliRunner().invoke(cli, ["train", "--data", "builtin:iris", "--epochs", "4", "--quiet",
                                      "--tensorboard", "false", "--learning-rate", "1e9",
                                      "--ensemble-size", ensemble_size])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    message = errors[0].removeprefix("Error: ")
    epoch = re.fullmatch(r"training diverged at epoch (\d+): (val_)?loss is (nan|inf|\S+, over 100x the dummy "
                         r"baseline's \S+) with learning_rate 1e\+09; "
                         r"lower the learning rate", message)
    assert epoch, message
    assert "Traceback" not in result.output and "Invalid loss" not in result.output
    run = tracking.only_run("train")
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == message and run.data.tags["diagnosis"] == "diverged"
    # The diverged epoch is logged, not dropped, and the fit stopped there.
    curves = [_history(tracking.client, run.info.run_id, name) for name in ("loss", "val_loss")]
    assert len(curves[0]) == len(curves[1]) == run.data.metrics["epochs_run"] < 4
    # MLflow's SQL stores keep NaN, and inf as the largest float; iris's dummy loss is log(3).
    assert any(math.isnan(v) or abs(v) > 100 * math.log(3) for v in curves[0] + curves[1])
    # No best checkpoint, or a finite one only.
    if tracking.client.list_artifacts(run.info.run_id, "checkpoints"):
        import mlflow

        local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="checkpoints/best.json")
        assert math.isfinite(json.load(open(local))["value"])


def test_a_diverged_optuna_trial_fails_and_the_study_goes_on(tracking, tmp_path):
    import optuna

    from pipelines.tune import Objective

    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 4))
    # Regression: mse at this learning rate overflows to NaN (a clipped cross-entropy stays finite).
    prepared = _prepared(x, 3 * x[:, 0] + 1, n_train=100, task="regression")
    parent = tracking.client.create_run(tracking.experiment_id).info.run_id
    # A median pruner past its start-up prunes a trial that reports NaN: the trial must still
    # fail as diverged rather than count as pruned.
    study = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    for rate in (1e-2, 1e9):
        base = TrainConfig(model="mlp", epochs=2, tensorboard=False, learning_rate=rate, units=8, layers=1)
        objective = Objective(base, {}, prepared, "val_loss", parent, tracking.experiment_id, "s", "split",
                              "table", str(tmp_path))
        study.optimize(objective, n_trials=1, catch=(Exception,))
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL]
    run = tracking.client.get_run(study.trials[1].user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["optuna.state"] == "FAIL"
    assert re.fullmatch(r"FittrackError: training diverged at epoch 1: loss is (nan|inf) with learning_rate 1e\+09; "
                        r"lower the learning rate", run.data.tags["error"]), run.data.tags["error"]
    assert run.data.tags["diagnosis"] == "diverged"


def test_the_default_digits_cnn_is_not_called_overfitting(tracking, tmp_path):
    """Issue 10: three epochs were tagged overfitting while val_loss was still falling (the
    train step's fit, on the split it makes, with the default CNN)."""
    from pipelines import data as data_sources
    from pipelines import train as training
    from pipelines.device import configure_device
    from pipelines.split import SplitConfig, split
    from pipelines.tracked_fit import fit_tracked
    from tracking.datasets import SplitData
    from tracking.features import prepare

    dataset = data_sources.load("builtin:digits")
    parts = split(SplitConfig(), dataset)
    prepared = prepare(SplitData(parts, dataset.target, dataset.task, dataset.kind, dataset.source,
                                 dataset.digest, classes=sorted(np.unique(dataset.y).tolist())))
    for epochs in (3, 6):
        config = TrainConfig(epochs=epochs, tensorboard=False)
        config.resolved_model = training.resolve_model(config, dataset.kind)
        configure_device(config)
        run_id = tracking.client.create_run(tracking.experiment_id).info.run_id
        outcome = fit_tracked(config, prepared, run_id, str(tmp_path), verbose=0)
        run = tracking.client.get_run(run_id)
        label, reason = run.data.tags["diagnosis"], run.data.tags["diagnosis_reason"]
        assert label == outcome.diagnosis.label, reason
        # Still falling at its last epoch: undertrained, or (the CNN's averaged weights make the last
        # epochs' fall smaller) within the noise of a good fit; never overfitting.
        assert label == "undertrained" or (epochs == 6 and label == "good_fit"), reason
        assert run.data.metrics["lowest_val_loss_epoch"] == epochs
        val = _history(tracking.client, run_id, "val_loss")
        train_eval = _history(tracking.client, run_id, "train_eval_loss")
        assert len(val) == len(train_eval) == epochs
        # Like with like: the training rows in inference mode (moving statistics, no dropout) score
        # in the validation rows' range, not at the training-mode loss, which the diagnosis does not use.
        loss = _history(tracking.client, run_id, "loss")
        assert 0.5 * val[-1] < train_eval[-1] < 1.1 * val[-1]
        assert abs(train_eval[-1] - val[-1]) < abs(loss[-1] - val[-1])
        assert f"epoch {epochs}" in reason and f"{val[-1]:.4g}" in reason


@pytest.mark.parametrize("classes", [2, 3])
def test_the_dummy_loss_is_the_best_constant_under_label_smoothing(classes):
    import keras

    from pipelines.baselines import dummy_loss

    rng = np.random.default_rng(classes)
    y = rng.choice(classes, size=500, p=np.linspace(1, 2, classes) / np.linspace(1, 2, classes).sum())
    shares = np.bincount(y, minlength=classes) / len(y)

    def keras_loss(constant):
        # Keras's own smoothed loss of a constant prediction, as the network's objective computes it.
        if classes == 2:
            loss = keras.losses.BinaryCrossentropy(label_smoothing=0.1)
            return float(loss(y.reshape(-1, 1).astype("float32"), np.full((len(y), 1), constant[1], "float32")))
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)
        return float(loss(np.eye(classes, dtype="float32")[y], np.tile(constant, (len(y), 1)).astype("float32")))

    smoothed = shares * 0.9 + 0.1 / classes
    assert dummy_loss("classification", y, 0.1) == pytest.approx(keras_loss(smoothed), abs=1e-5)
    assert keras_loss(shares) > keras_loss(smoothed)  # the unsmoothed shares are not the best constant
    assert dummy_loss("classification", y, 0.1) > dummy_loss("classification", y)


def test_ratios_are_taken_above_the_label_smoothing_floor():
    from pipelines.baselines import loss_floor

    # 10 classes smoothed by 0.1: a perfect prediction still has a loss of about 0.5.
    floor = loss_floor("classification", 10, 0.1)
    assert floor == pytest.approx(-(0.91 * math.log(0.91) + 9 * 0.01 * math.log(0.01)), abs=1e-9)
    assert loss_floor("classification", 10, 0.0) == loss_floor("regression", 1, 0.1) == 0.0
    train, val = [2.0, 0.7, 0.56, 0.52], [2.0, 1.1, 1.05, 1.04]
    # Validation 0.54 above the floor against training 0.02: memorised, though 1.04 is not 2x 0.52.
    smoothed = diagnose(train, val, dummy_loss=2.3, train_eval_loss=train, floor=floor)
    assert smoothed.label == "overfitting" and "1.04 is over 2x" in smoothed.reason
    assert diagnose(train, val, dummy_loss=2.3, train_eval_loss=train).label == "good_fit"
