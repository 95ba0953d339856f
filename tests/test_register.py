"""Registering models with champion/challenger aliases, against a real store and registry."""

import json
import os
import subprocess
import sys
import time
import urllib.request

import mlflow
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.datasets import load_iris

from pipelines.cli import cli
from tests.conftest import PROJECT_ROOT, free_port


def _invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _train(*args):
    result = _invoke("train", "--data", "builtin:iris", "--quiet", "--tensorboard", "false", *args)
    assert result.exit_code == 0, result.output
    return [r for r in _runs("train")][-1].info.run_id


def _runs(step):
    client = mlflow.MlflowClient()
    experiment = mlflow.get_experiment_by_name("test")
    return client.search_runs([experiment.experiment_id], f"tags.`fittrack.step` = '{step}'",
                              order_by=["attributes.start_time ASC"])


def test_champion_moves_only_when_the_challenger_wins(tracking):
    weak = _train("--epochs", "1", "--learning-rate", "0.0005")
    strong = _train("--epochs", "25", "--learning-rate", "0.02")
    client = tracking.client

    assert _invoke("register", "--run-id", weak).exit_code == 0
    assert str(client.get_model_version_by_alias("iris", "champion").version) == "1"

    assert _invoke("register", "--run-id", strong).exit_code == 0
    champion = client.get_model_version_by_alias("iris", "champion")
    assert str(champion.version) == "2"
    assert champion.tags["source_run_id"] == strong and "test_accuracy" in champion.tags

    again = _invoke("register", "--run-id", weak)
    assert again.exit_code == 0 and "lost to champion version 2" in again.output
    assert str(client.get_model_version_by_alias("iris", "champion").version) == "2"
    assert str(client.get_model_version_by_alias("iris", "challenger").version) == "3"
    last = _runs("register")[-1]
    assert last.data.tags["promoted"] == "false"
    assert last.data.metrics["champion_test_accuracy"] > last.data.metrics["challenger_test_accuracy"]

    model = mlflow.pyfunc.load_model("models:/iris@champion")
    rows = load_iris(as_frame=True).data.iloc[:10]
    assert np.asarray(model.predict(rows)).shape == (10,)


def test_best_run_of_the_experiment_is_picked(tracking):
    _train("--epochs", "1", "--learning-rate", "0.0005")
    strong = _train("--epochs", "15", "--learning-rate", "0.02")
    assert _invoke("register", "--metric", "val_accuracy").exit_code == 0
    assert tracking.client.get_model_version("iris", "1").tags["source_run_id"] == strong


def test_nothing_to_register_is_one_line(tracking):
    result = CliRunner().invoke(cli, ["register"])
    assert result.exit_code == 1
    assert "has no finished run with a model to register" in result.output
    assert _runs("register")[0].info.status == "FAILED"


def test_metric_no_run_has_is_one_line(tracking):
    _train("--epochs", "1")
    result = CliRunner().invoke(cli, ["register", "--metric", "val_r2_score"])
    assert result.exit_code == 1
    assert "no finished run in experiment" in result.output and "logged metric 'val_r2_score'" in result.output


def _register_process(tracking, run_id):
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking.uri, "MLFLOW_EXPERIMENT_ID": tracking.experiment_id}
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", "register", "--run-id", run_id],
                            cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_registers_at_once_leave_one_consistent_champion(tracking):
    weak = _train("--epochs", "1", "--learning-rate", "0.0005")
    strong = _train("--epochs", "25", "--learning-rate", "0.02")
    client = tracking.client
    # Version 1 stands for a register run still deciding: both processes must queue behind it,
    # then decide one after the other.
    holder = client.create_run(tracking.experiment_id, tags={"fittrack.step": "register"})
    mlflow.register_model(f"runs:/{weak}/model", "iris", tags={
        "fittrack.promotion": "pending", "fittrack.register_run_id": holder.info.run_id})
    workers = [_register_process(tracking, run_id) for run_id in (weak, strong)]
    deadline = time.monotonic() + 240
    while len(client.search_model_versions("name = 'iris'")) < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2)
    queued = [v.tags.get("fittrack.promotion") for v in client.search_model_versions("name = 'iris'")]
    assert queued == ["pending"] * 3, "a register run decided while version 1 was pending"
    assert [w.poll() for w in workers] == [None, None]
    client.set_model_version_tag("iris", "1", "fittrack.promotion", "kept")
    client.set_terminated(holder.info.run_id, "FINISHED")
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs

    versions = {str(v.version): v for v in client.search_model_versions("name = 'iris'")}
    assert sorted(versions) == ["1", "2", "3"]
    assert {versions[v].tags["source_run_id"] for v in ("2", "3")} == {weak, strong}
    assert {versions[v].tags["fittrack.promotion"] for v in ("2", "3")} <= {"promoted", "kept"}
    assert client.get_model_version_by_alias("iris", "champion").tags["source_run_id"] == strong
    assert str(client.get_model_version_by_alias("iris", "challenger").version) == "3"
    # Version 3 was judged against the champion version 2 left behind.
    third = next(r for r in _runs("register") if r.data.tags.get("registered_version") == "3")
    assert third.data.metrics["champion_test_accuracy"] is not None
    assert all(r.info.status == "FINISHED" for r in _runs("register"))


def _table_with_categories_and_gaps(path, n=400, seed=0):
    rng = np.random.default_rng(seed)
    colour = rng.choice(["red", "green", "blue"], size=n)
    size = rng.normal(size=n)
    label = np.where((colour == "red") | (size > 0.8), "yes", "no")
    frame = pd.DataFrame({"colour": colour, "size": size, "noise": rng.normal(size=n), "label": label})
    frame.loc[rng.choice(n, 30, replace=False), "size"] = np.nan
    frame.loc[rng.choice(n, 30, replace=False), "colour"] = np.nan
    frame.to_csv(path, index=False)
    return frame


@pytest.mark.e2e
def test_champion_takes_raw_csv_rows_and_is_served_over_http(tracking):
    csv = tracking.folder / "shop.csv"
    frame = _table_with_categories_and_gaps(csv)
    result = _invoke("train", "--data", str(csv), "--target", "label", "--quiet", "--tensorboard", "false",
                     "--epochs", "30", "--learning-rate", "0.01")
    assert result.exit_code == 0, result.output
    assert _invoke("register").exit_code == 0

    rows = frame.drop(columns="label").iloc[:40].copy()
    rows.loc[rows.index[0], "colour"] = "purple"  # a category the training split never had
    rows.loc[rows.index[1], ["colour", "size"]] = np.nan
    model = mlflow.pyfunc.load_model("models:/shop@champion")
    predicted = np.asarray(model.predict(rows))
    assert set(predicted) <= {"yes", "no"} and len(predicted) == 40
    known = rows["colour"].notna() & rows["size"].notna() & (rows["colour"] != "purple")
    assert (predicted[known.to_numpy()] == frame["label"].iloc[:40][known].to_numpy()).mean() >= 0.85

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/shop@champion", "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "MLFLOW_TRACKING_URI": tracking.uri}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    try:
        _wait_until_pings(f"http://127.0.0.1:{port}/ping", server)
        payload = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            served = json.loads(response.read())["predictions"]
        assert served == predicted.tolist()
    finally:
        server.terminate()
        server.wait(timeout=30)


def _wait_until_pings(url, server, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"mlflow models serve exited: {server.stdout.read()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout} s")
