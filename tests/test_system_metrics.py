"""System metrics, kept checkpoints and the artifact-size metric, on real train and trial runs (issue 15).

Each fit is a few epochs of builtin:iris; one test trains (system metrics on, then off), one tunes
(on, then the same study carried on with them off), the rest use no fit at all.
"""

import os
import threading
import time

import keras
import mlflow
import optuna
import pytest
from click.testing import CliRunner

from pipelines.cli import cli
from pipelines.steps.tune import STUDY_ARTIFACT_BYTES
from tracking import system_metrics
from tracking.runs import ARTIFACT_BYTES

#: What MLflow's monitor logs on every machine (GPU metrics only where nvidia-ml-py finds a GPU).
SYSTEM = ("system/cpu_utilization_percentage", "system/system_memory_usage_megabytes",
          "system/system_memory_usage_percentage", "system/disk_usage_percentage",
          "system/network_receive_megabytes")


def _invoke(*args):
    result = CliRunner().invoke(cli, [*args, "--quiet", "--data", "builtin:iris"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def _listing(client, run_id, path=None) -> dict:
    """{artifact path: size} of every file of the run, folders walked."""
    files = {}
    for info in client.list_artifacts(run_id, path):
        files.update(_listing(client, run_id, info.path) if info.is_dir else {info.path: info.file_size})
    return files


def _system(run) -> set:
    return {k for k in run.data.metrics if k.startswith(system_metrics.SYSTEM_PREFIX)}


def _no_sampling_thread_left():
    return not [t for t in threading.enumerate() if t.name == "SystemMetricsMonitor" and t.is_alive()]


def test_train_run_holds_system_metrics_the_last_epochs_and_its_artifact_size(tracking):
    _invoke("train", "--epochs", "5", "--tensorboard", "false", "--keep-checkpoints", "2",
            "--system-metrics-interval", "0.5")
    run = tracking.only_run("train")
    client, run_id = tracking.client, run.info.run_id
    assert run.data.params["system_metrics"] == "true" and run.data.params["system_metrics_interval"] == "0.5"
    assert set(SYSTEM) <= _system(run)
    # Sampled every 0.5 s by its own thread over a run of several seconds, at steps 0, 1, 2, ...
    steps = sorted(m.step for m in client.get_metric_history(run_id, "system/cpu_utilization_percentage"))
    assert len(steps) >= 3 and steps == list(range(len(steps)))
    assert _no_sampling_thread_left()

    # The best and the last two epochs, numbered as Keras prints them (and as their metrics' steps).
    last = int(run.data.metrics["epochs_run"])
    assert last == 5
    files = _listing(client, run_id)
    kept = {p for p in files if p.startswith("checkpoints/")}
    assert kept == {"checkpoints/best.keras", "checkpoints/best.json", f"checkpoints/last/epoch-{last - 1:03d}.keras",
                    f"checkpoints/last/epoch-{last:03d}.keras"}
    # A kept epoch is that epoch's model: it scores the validation rows as that epoch's val_loss says.
    from tracking.datasets import load_split
    from tracking.features import prepare

    prepared = prepare(load_split(run.data.params["split_run_id"]))
    x, y = prepared.features["val"], prepared.targets["val"]
    logged = {m.step: m.value for m in client.get_metric_history(run_id, "val_loss")}
    assert logged[last - 1] != pytest.approx(logged[last], rel=1e-6)  # so that the epochs can be told apart
    for epoch in (last - 1, last):
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"checkpoints/last/epoch-{epoch:03d}.keras")
        model = keras.models.load_model(path)
        loss = float(keras.ops.convert_to_numpy(model.compute_loss(x=x, y=y, y_pred=model.predict(x, verbose=0))))
        assert loss == pytest.approx(logged[epoch], rel=1e-5), epoch

    # Every artifact is counted, in bytes, once they are all written.
    assert run.data.metrics[ARTIFACT_BYTES] == sum(files.values()) > 0

    # Off: no system metrics, no thread; and keep_checkpoints 0 keeps the best only.
    _invoke("train", "--epochs", "1", "--tensorboard", "false", "--system-metrics", "false")
    off = tracking.runs("train")[-1]
    assert off.info.run_id != run_id and off.info.status == "FINISHED"
    assert off.data.params["system_metrics"] == "false"
    assert _system(off) == set()
    assert {p for p in _listing(client, off.info.run_id) if p.startswith("checkpoints/")} == {
        "checkpoints/best.keras", "checkpoints/best.json"}
    assert _no_sampling_thread_left()


def test_trial_runs_hold_system_metrics_their_last_epoch_and_the_study_its_disk_use(tracking):
    _invoke("tune", "--n-trials", "2", "--trial-epochs", "2", "--pruner", "none", "--keep-checkpoints", "1")
    client = tracking.client
    trials = tracking.runs("trial")
    assert len(trials) == 2
    for trial in trials:
        assert trial.info.status == "FINISHED"
        # A trial of a second or two still has its samples: the one its end closes at least.
        assert set(SYSTEM) <= _system(trial)
        files = _listing(client, trial.info.run_id)
        assert set(files) == {"checkpoints/best.keras", "checkpoints/best.json", "checkpoints/last/epoch-002.keras"}
        assert trial.data.metrics[ARTIFACT_BYTES] == sum(files.values()) > 0
    parent = tracking.only_run("tune")
    own = sum(_listing(client, parent.info.run_id).values())
    assert parent.data.metrics[ARTIFACT_BYTES] == own > 0
    assert parent.data.metrics[STUDY_ARTIFACT_BYTES] == own + sum(
        sum(_listing(client, t.info.run_id).values()) for t in trials)
    assert _no_sampling_thread_left()

    # The same study carried on, one trial more, with system metrics off.
    _invoke("tune", "--n-trials", "3", "--trial-epochs", "2", "--pruner", "none", "--system-metrics", "false")
    [third] = [t for t in tracking.runs("trial") if t.info.run_id not in {r.info.run_id for r in trials}]
    assert third.info.status == "FINISHED" and third.data.params["system_metrics"] == "false"
    assert _system(third) == set()
    assert set(_listing(client, third.info.run_id)) == {"checkpoints/best.keras", "checkpoints/best.json"}


def _history(tracking, run_id, name="system/cpu_utilization_percentage"):
    return sorted(m.step for m in tracking.client.get_metric_history(run_id, name))


def test_sampling_stops_with_the_block_however_it_ends_and_keeps_its_last_window(tracking, monkeypatch):
    # MLflow's own variable does not override the interval a run was given (and logged as a param).
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "100")
    client = tracking.client
    pruned = client.create_run(tracking.experiment_id).info.run_id
    with pytest.raises(optuna.TrialPruned):
        with system_metrics.monitor(pruned, True, 0.1) as started:
            time.sleep(0.45)
            assert started.running
            raise optuna.TrialPruned()
    assert not started.running and _no_sampling_thread_left()
    steps = _history(tracking, pruned)
    assert len(steps) >= 4 and steps == list(range(len(steps)))
    # Stopped means stopped: nothing more is logged afterwards.
    time.sleep(0.3)
    assert _history(tracking, pruned) == steps

    # A run far shorter than the interval still gets one sample, at its end.
    short = client.create_run(tracking.experiment_id).info.run_id
    with pytest.raises(KeyboardInterrupt):
        with system_metrics.monitor(short, True, 60):
            raise KeyboardInterrupt
    assert _history(tracking, short) == [0]
    assert _no_sampling_thread_left()

    # Off: no thread, no metric.
    off = client.create_run(tracking.experiment_id).info.run_id
    with system_metrics.monitor(off, False, 0.1) as started:
        time.sleep(0.2)
        assert not started.running
    assert not [k for k in client.get_run(off).data.metrics if k.startswith("system/")]


@pytest.mark.parametrize("args, message", [
    (["--system-metrics-interval", "0"], "system_metrics_interval must be > 0, got 0.0"),
    (["--keep-checkpoints", "-2"], "keep_checkpoints must be >= 0, got -2"),
])
def test_bad_tune_values_are_one_line_before_any_run(tracking, args, message):
    result = CliRunner().invoke(cli, ["tune", "--quiet", "--data", "builtin:iris", *args])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [f"Error: {message}"], result.output
    assert tracking.runs() == []


def test_a_run_from_before_these_parameters_is_reproduced_with_their_defaults_and_no_system_rows():
    from pipelines.steps.reproduce import compare_metrics, parse_config
    from pipelines.train import TrainConfig

    logged = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in TrainConfig().params().items()}
    for name in ("keep_checkpoints", "system_metrics", "system_metrics_interval"):
        del logged[name]
    warnings = []
    config = parse_config(TrainConfig, logged, "r1", warnings)
    # Nothing it trained changes: it keeps the best checkpoint only, as it did, and is monitored as runs are now.
    assert (config.keep_checkpoints, config.system_metrics, config.system_metrics_interval) == (0, True, 2.0)
    assert "logged no keep_checkpoints, system_metrics, system_metrics_interval" in warnings[0]
    # The machine's figures are no part of what a reproduction compares.
    rows = compare_metrics({"test_accuracy": 0.9, "system/cpu_utilization_percentage": 40.0},
                           {"test_accuracy": 0.9, "system/cpu_utilization_percentage": 80.0})
    assert rows == [("test_accuracy", 0.9, 0.9, 0.0)]
