"""A train process SIGKILLed mid-fit and started again with its run id goes on from its last epoch."""

import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from pipelines.cli import cli

pytestmark = pytest.mark.e2e

EPOCHS = 10


def _train_process(tracking, *args):
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking.uri, "MLFLOW_EXPERIMENT_ID": tracking.experiment_id}
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "train", "--data", "builtin:digits", "--quiet", "--tensorboard",
         "false", "--epochs", str(EPOCHS), "--patience", "100", *args],
        cwd=tracking.folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _steps(client, run_id, name):
    return sorted(m.step for m in client.get_metric_history(run_id, name))


def test_a_killed_run_resumes_from_its_last_epoch(tracking):
    client = tracking.client
    first = _train_process(tracking)
    deadline = time.monotonic() + 300
    run_id = None
    while time.monotonic() < deadline:
        assert first.poll() is None, first.stdout.read()[-3000:]
        found = tracking.runs("train")
        if found and len(_steps(client, found[0].info.run_id, "loss")) >= 3:
            run_id = found[0].info.run_id
            break
        time.sleep(0.2)
    assert run_id, "the first process did not log three epochs"
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    before = _steps(client, run_id, "loss")
    backup = tracking.folder / ".fittrack" / "resume" / run_id
    assert (backup / "metrics.jsonl").exists() and (backup / "keras").is_dir()

    # A split that could not be reused now (made by other code) is still the one the run goes on with.
    split_run_id = client.get_run(run_id).data.tags["fittrack.split_run_id"]
    client.set_tag(split_run_id, "fittrack.code_version", "older")
    again = _train_process(tracking, "--run-id", run_id)
    output = again.communicate(timeout=600)[0]
    assert again.returncode == 0, output[-3000:]

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and len(tracking.runs("train")) == 1
    assert run.data.tags["fittrack.split_run_id"] == split_run_id and len(tracking.runs("split")) == 1
    assert tracking.client.get_run(split_run_id).data.tags["mlflow.parentRunId"] == run_id
    for name in ("loss", "val_loss", "accuracy", "val_accuracy", "learning_rate", "train_eval_loss"):
        assert _steps(client, run_id, name) == list(range(1, EPOCHS + 1)), name  # numbered from 1
    assert run.data.metrics["epochs_run"] == EPOCHS
    # The diagnosis read the whole history, not only the resumed process's epochs (the plot is
    # drawn from the same history: MlflowMetricsLogger.history, tests/test_callbacks.py).
    val_loss = [m.value for m in sorted(client.get_metric_history(run_id, "val_loss"), key=lambda m: m.step)]
    lowest = min(range(EPOCHS), key=val_loss.__getitem__)
    assert run.data.metrics["lowest_val_loss_epoch"] == lowest + 1
    reason = run.data.tags["diagnosis_reason"]
    assert f"epoch {lowest + 1}" in reason and f"{val_loss[lowest]:.4g}" in reason, reason
    if run.data.tags["diagnosis"] == "undertrained":
        assert f"of {EPOCHS}" in reason
    # Keras's BackupAndRestore went on from the last backed-up epoch instead of starting over.
    resumed_at = int(run.data.tags["fittrack.resumed_at_epoch"])
    assert 2 <= resumed_at <= EPOCHS and len(before) >= 3
    assert "test_accuracy" in run.data.metrics
    assert not backup.exists(), "the backup is removed once the run is logged"


@pytest.mark.parametrize("make_run, message", [
    (lambda t: "nosuchrun", "run 'nosuchrun' not found in the tracking store"),
    (lambda t: t.client.create_run(t.experiment_id, tags={"fittrack.step": "split"}).info.run_id,
     "is not a train run; only a train run can be resumed"),
])
def test_resuming_a_wrong_run_is_one_line(tracking, make_run, message):
    run_id = make_run(tracking)
    result = CliRunner().invoke(cli, ["train", "--data", "builtin:iris", "--run-id", run_id])
    assert result.exit_code == 1 and message in result.output
    assert tracking.runs("train") == []
