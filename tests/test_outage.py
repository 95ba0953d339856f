"""A training run against a real tracking server that goes away mid-fit (and comes back, or not)."""

import os
import subprocess
import sys
import time

import mlflow
import pytest

from pipelines.errors import FittrackError
from tests.conftest import free_port
from tracking import outage
from tracking import server as fittrack_server

pytestmark = pytest.mark.e2e


class Server:
    """`fittrack server` (local profile) on a SQLite file with served artifacts; stop() then
    start() bring the same store back on the same port."""

    def __init__(self, folder):
        self.folder = folder
        self.config = fittrack_server.ServerConfig(
            port=free_port(), backend_store_uri=f"sqlite:///{folder / 'server.db'}",
            artifacts_destination=str(folder / "artifacts"), state_dir=str(folder / ".server"))
        self.url = self.config.url

    def start(self):
        fittrack_server.start(self.config)

    def stop(self):
        fittrack_server.stop(self.config.state_dir)


@pytest.fixture
def tracking_server(tmp_path):
    running = Server(tmp_path)
    running.start()
    yield running
    running.stop()


def _train_process(server, *args):
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.url}
    env.pop("MLFLOW_EXPERIMENT_ID", None)
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "train", "--data", "builtin:digits", "--quiet",
         "--tensorboard", "false", *args],
        cwd=server.folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_epochs(client, n, process, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()[-3000:]
        found = client.search_runs(["0"], "tags.`fittrack.step` = 'train'")
        if found and len(client.get_metric_history(found[0].info.run_id, "loss")) >= n:
            return found[0].info.run_id
        time.sleep(0.3)
    raise AssertionError(f"the train run did not log {n} epochs in {timeout} s")


def test_every_epoch_arrives_once_when_the_server_comes_back(tracking_server):
    server = tracking_server
    client = mlflow.MlflowClient(tracking_uri=server.url)
    training = _train_process(tracking_server, "--epochs", "14", "--patience", "100", "--outage-timeout", "120")
    run_id = _wait_for_epochs(client, 2, training)
    server.stop()
    time.sleep(8)  # a few epochs pass with no server
    server.start()
    output = training.communicate(timeout=600)[0]
    assert training.returncode == 0, output[-3000:]

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    epochs = int(run.data.metrics["epochs_run"])
    assert epochs == 14
    for name in ("loss", "val_loss", "accuracy", "val_accuracy", "learning_rate"):
        steps = [m.step for m in client.get_metric_history(run_id, name)]
        assert sorted(steps) == list(range(1, epochs + 1)), (name, sorted(steps))
    assert {a.path for a in client.list_artifacts(run_id)} >= {"checkpoints", "network"}
    assert not (server.folder / "fittrack-unsent").exists()


def test_a_server_that_never_returns_stops_the_run_and_keeps_the_model(tracking_server):
    server = tracking_server
    client = mlflow.MlflowClient(tracking_uri=server.url)
    started = time.monotonic()
    training = _train_process(tracking_server, "--epochs", "8", "--patience", "100", "--outage-timeout", "10")
    run_id = _wait_for_epochs(client, 2, training)
    server.stop()
    output = training.communicate(timeout=600)[0]
    assert training.returncode == 1, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "did not answer within the outage timeout" in errors[0], output[-3000:]
    assert "Traceback" not in output
    kept = server.folder / "fittrack-unsent" / run_id
    assert str(kept) in errors[0]
    assert (kept / "best.keras").stat().st_size > 0 and (kept / "model.keras").stat().st_size > 0
    print(f"stopped {time.monotonic() - started:.0f} s after the start")


def test_outage_timeout_sizes_mlflows_retries():
    assert sum(outage.backoff_waits(*outage.retry_settings(300))) >= 300
    assert sum(outage.backoff_waits(*outage.retry_settings(10))) < 30
    assert outage.retry_settings(0) == (0, 1)
    with pytest.raises(FittrackError, match=r"outage_timeout must be in \[0, 600\], got 601"):
        outage.retry_settings(601)
