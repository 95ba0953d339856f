"""Transfer learning: `train --init-model` from a registered model or a run's checkpoint."""

import json
import os

import mlflow
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.datasets import load_digits

from pipelines.cli import cli
from pipelines.steps.register import run_register
from pipelines.transfer import Phase, Transfer, TransferConfig, resolve

# Digits as 64 pixel columns: the MLP path, whose network config does not depend on the CNN's options.
# Batch size 64 leaves a from-scratch fit about 10 optimizer steps per epoch, so that how fast each
# start learns shows over a few epochs; the probe head does not depend on the number of steps.
# One network, not an ensemble: what this compares is the start, so both runs fit the simplest network.
SAME = ["--quiet", "--tensorboard", "false", "--batch-size", "64", "--seed", "42", "--ensemble-size", "1"]
THRESHOLD = 0.85


def _train(*args):
    result = CliRunner().invoke(cli, ["train", *SAME, *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def _latest_train_run(tracking):
    return tracking.runs("train")[-1]


def _history(tracking, run, metric):
    return sorted((m.step, m.value) for m in tracking.client.get_metric_history(run.info.run_id, metric))


def _first_epoch_reaching(history, threshold):
    return next((step for step, value in history if value >= threshold), None)


@pytest.fixture
def digits_halves(tmp_path):
    digits = load_digits()
    paths = {}
    for name, keep in (("digits04", digits.target < 5), ("digits59", digits.target >= 5)):
        paths[name] = tmp_path / f"{name}.npz"
        np.savez(paths[name], x=digits.data[keep], y=digits.target[keep])
    return paths


def test_fine_tuned_model_reaches_the_threshold_sooner_than_from_scratch(tracking, digits_halves):
    _train("--data", str(digits_halves["digits04"]), "--epochs", "8")
    source = _latest_train_run(tracking)
    registered = run_register(run_id=source.info.run_id, model_name="digits04")
    # The model URI a train run prints (a logged model's) leads to the same run's network.
    assert resolve(TransferConfig(source.data.tags["fittrack.model_uri"])).run_id == source.info.run_id

    _train("--data", str(digits_halves["digits59"]), "--epochs", "6")
    scratch = _latest_train_run(tracking)
    _train("--data", str(digits_halves["digits59"]), "--epochs", "6", "--init-model", "models:/digits04@champion")
    tuned = _latest_train_run(tracking)

    # Same split, same network config; only the start differs.
    assert scratch.data.params["split_run_id"] == tuned.data.params["split_run_id"]
    assert {k: v for k, v in scratch.data.params.items() if k in tuned.data.params} == {
        k: v for k, v in tuned.data.params.items() if k in scratch.data.params}
    scratch_curve = _history(tracking, scratch, "val_accuracy")
    tuned_curve = _history(tracking, tuned, "val_accuracy")
    scratch_epoch = _first_epoch_reaching(scratch_curve, THRESHOLD)
    tuned_epoch = _first_epoch_reaching(tuned_curve, THRESHOLD)
    print(f"\nval_accuracy >= {THRESHOLD}: fine-tuned at epoch {tuned_epoch}, from scratch at epoch {scratch_epoch}; "
          f"test_accuracy fine-tuned {tuned.data.metrics['test_accuracy']:.4f}, "
          f"from scratch {scratch.data.metrics['test_accuracy']:.4f}")
    assert tuned_epoch is not None
    assert tuned_epoch < (scratch_epoch if scratch_epoch is not None else len(scratch_curve) + 1)

    # The run says what it started from, and how it was fine-tuned.
    tags, params = tuned.data.tags, tuned.data.params
    assert tags["fittrack.init_model"] == "models:/digits04@champion"
    assert tags["fittrack.init_model_name"] == "digits04"
    assert tags["fittrack.init_model_version"] == str(registered["version"])
    assert tags["fittrack.init_run_id"] == source.info.run_id
    assert params["init_model"] == "models:/digits04@champion" and params["freeze_epochs"] == "3"
    assert float(params["fine_tune_learning_rate"]) == pytest.approx(1e-4) and params["head_init"] == "probe"

    # Two phases, one history: every epoch logged once, the learning rate dropping where fine-tuning starts.
    epochs_run = int(tuned.data.metrics["epochs_run"])
    assert [step for step, _ in tuned_curve] == list(range(1, epochs_run + 1)) == list(range(1, 7))
    learning_rate = dict(_history(tracking, tuned, "learning_rate"))
    # freeze_epochs 3: epochs 1-3 train the head, fine-tuning starts at epoch 4.
    assert learning_rate[3] == pytest.approx(1e-3) and learning_rate[4] == pytest.approx(1e-4)

    # The best epoch is the best of both phases, and it is what the checkpoint holds.
    val_loss = _history(tracking, tuned, "val_loss")
    best_step = min(val_loss, key=lambda pair: pair[1])[0]
    local = mlflow.artifacts.download_artifacts(run_id=tuned.info.run_id, artifact_path="checkpoints")
    with open(os.path.join(local, "best.json")) as f:
        assert json.load(f)["epoch"] == best_step == int(tuned.data.metrics["best_epoch"])
    # The logged model takes rows as the source had them and answers with the new task's labels.
    model = mlflow.pyfunc.load_model(f"runs:/{tuned.info.run_id}/model")
    rows = pd.DataFrame(load_digits().data[:50], columns=[f"x{i}" for i in range(64)])  # as the NPZ loader names them
    assert set(np.asarray(model.predict(rows)).astype(int)) <= {5, 6, 7, 8, 9}


def test_phases_continue_the_epoch_count():
    def phases(freeze_epochs, epochs=10, fine_tune_learning_rate=0.0):
        config = TransferConfig("models:/m@a", freeze_epochs, fine_tune_learning_rate)
        return Transfer(config, "run", "network").phases(epochs, 0.01)

    assert phases(3) == [Phase(3, 0.01, False), Phase(10, 0.001, True)]
    assert phases(0, fine_tune_learning_rate=0.005) == [Phase(10, 0.005, True)]
    assert phases(10) == phases(50) == [Phase(10, 0.01, False)]


@pytest.mark.parametrize("task, n_classes", [("classification", 5), ("classification", 2), ("regression", 1)])
def test_probe_head_fits_every_task(task, n_classes):
    import keras

    from pipelines.transfer import fit_probe, with_new_head

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)).astype("float32")
    signal = x[:, 0] - x[:, 1]
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    network = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="output")(hidden))
    model, body = with_new_head(network, task, n_classes, target_mean=100.0, target_std=10.0)
    if task == "regression":
        y = (100 + 10 * signal).reshape(-1, 1).astype("float32")
    elif n_classes == 2:
        y = (signal > 0).astype("float32").reshape(-1, 1)
    else:
        y = np.eye(5, dtype="float32")[np.digitize(signal, np.quantile(signal, [0.2, 0.4, 0.6, 0.8]))]
    fit_probe(model, body, x, y, task, target_mean=100.0, target_std=10.0)
    predicted = model.predict(x, verbose=0)
    assert predicted.shape == (200, n_classes if n_classes > 2 else 1)
    if task == "regression":
        # In the target's own units, through the head's Rescaling, and following the signal.
        assert abs(predicted.mean() - y.mean()) < 0.5 and np.corrcoef(predicted[:, 0], y[:, 0])[0, 1] > 0.5
    else:
        labels = predicted.argmax(1) if n_classes > 2 else (predicted[:, 0] > 0.5)
        truth = y.argmax(1) if n_classes > 2 else y[:, 0] > 0.5
        assert (labels == truth).mean() > 1 / n_classes + 0.1


# --- bad input -------------------------------------------------------------------------------------


@pytest.fixture
def tiny_registered(tracking, tmp_path):
    """A small untrained digits-shaped network, logged as a fittrack train run logs it and registered."""
    import keras

    inputs = keras.Input((8, 8), name="features")
    hidden = keras.layers.Dense(4, activation="relu", name="dense")(keras.layers.Flatten()(inputs))
    network = keras.Model(inputs, keras.layers.Dense(5, activation="softmax", name="output")(hidden))
    with mlflow.start_run() as run:
        mlflow.keras.save_model(network, str(tmp_path / "network"), pip_requirements=[])
        mlflow.log_artifacts(str(tmp_path / "network"), "network")
        network.save(tmp_path / "best.keras")
        mlflow.log_artifact(str(tmp_path / "best.keras"), "checkpoints")
    version = mlflow.register_model(f"runs:/{run.info.run_id}/network", "tiny")
    tracking.client.set_registered_model_alias("tiny", "champion", version.version)
    return run.info.run_id


UNKNOWN_RUN = "0123456789abcdef0123456789abcdef"
CASES = {
    "unknown model name": ("models:/nosuch@champion",
                           "init_model 'models:/nosuch@champion': no registered model named 'nosuch' (registered: tiny)"),
    "unknown alias": ("models:/tiny@gold", "registered model 'tiny' has no alias 'gold' (its aliases: champion)"),
    "unknown version": ("models:/tiny/7", "registered model 'tiny' has no version '7' (its versions: 1)"),
    "no version or alias": ("models:/tiny", "names no version or alias; give models:/tiny@ALIAS"),
    "unknown run id": (UNKNOWN_RUN, f"init_model '{UNKNOWN_RUN}': run '{UNKNOWN_RUN}' not found"),
    "unknown run in a runs URI": (f"runs:/{UNKNOWN_RUN}/checkpoints/best.keras", f"run '{UNKNOWN_RUN}' not found"),
    "missing artifact": ("runs:/{run}/checkpoints/last.keras", "has no Keras network at 'checkpoints/last.keras'"),
    "not a model URI": ("s3://bucket/model.keras", "init_model 's3://bucket/model.keras' is not a model URI or run id"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_init_model_is_one_line_before_any_run(case, tracking, tiny_registered):
    init_model, expected = (s.format(run=tiny_registered) for s in CASES[case])
    result = CliRunner().invoke(cli, ["train", "--epochs", "1", "--quiet", "--init-model", init_model])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], result.output
    # Validated before the split and the train run open: nothing is left behind.
    assert tracking.runs("split") == [] and tracking.runs("train") == []


@pytest.mark.parametrize("init_model", ["models:/tiny@champion", "{run}"])
def test_input_shape_that_does_not_fit_names_both_and_fails_the_run(init_model, tracking, tiny_registered):
    init_model = init_model.format(run=tiny_registered)
    result = CliRunner().invoke(cli, ["train", "--data", "builtin:iris", "--epochs", "1", "--quiet",
                                      "--init-model", init_model])
    assert result.exit_code == 1 and "Traceback" not in result.output
    expected = f"init_model '{init_model}' takes inputs of shape (8, 8), but this data's features have shape (4,)"
    assert expected in result.output.splitlines()[-1]
    run = tracking.only_run("train")
    assert run.info.status == "FAILED" and run.data.tags["error"] == expected
    assert run.data.tags["fittrack.init_model"] == init_model


def test_a_new_head_on_an_ensemble_reads_every_member():
    import keras

    from pipelines.models import build_model
    from pipelines.train import TrainConfig
    from pipelines.transfer import fit_probe, with_new_head

    config = TrainConfig(model="mlp", ensemble_size=3, layers=2, units=4)
    config.resolved_model = "mlp"
    network = build_model(config, (6,), "classification", 3)
    model, body = with_new_head(network, "classification", 2)
    head = model.get_layer("output")
    # Three members of 4 units each, side by side: the head reads 12 features, not one member's 4.
    assert head.kernel.shape == (12, 1)
    assert {"members_dense_0", "members_dense_1"} <= {layer.name for layer in body}
    x = np.random.default_rng(0).normal(size=(50, 6)).astype("float32")
    fit_probe(model, body, x, (x[:, 0] > 0).astype("float32").reshape(-1, 1), "classification")
    assert keras.ops.convert_to_numpy(head.kernel).any()
