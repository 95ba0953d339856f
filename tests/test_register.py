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
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED
from sklearn.datasets import load_iris, load_wine
from sklearn.metrics import accuracy_score

from pipelines.steps import register as register_step
from pipelines.cli import cli
from tests.conftest import PROJECT_ROOT, free_port
from tracking.datasets import load_split


def _invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _train(*args, data="builtin:iris"):
    result = _invoke("train", "--data", data, "--quiet", "--tensorboard", "false", *args)
    assert result.exit_code == 0, result.output
    return [r for r in _runs("train")][-1].info.run_id


def _runs(step):
    client = mlflow.MlflowClient()
    experiment = mlflow.get_experiment_by_name("test")
    return client.search_runs([experiment.experiment_id], f"tags.`fittrack.step` = '{step}'",
                              order_by=["attributes.start_time ASC"])


def test_champion_moves_only_when_the_challenger_wins(tracking, monkeypatch):
    weak = _train("--epochs", "1", "--learning-rate", "0.0005")
    strong = _train("--epochs", "25", "--learning-rate", "0.02")
    client = tracking.client

    assert _invoke("register", "--run-id", weak).exit_code == 0
    assert str(client.get_model_version_by_alias("iris", "champion").version) == "1"
    assert client.get_model_version("iris", "1").tags["fittrack.comparison"] == "none: no champion yet"

    assert _invoke("register", "--run-id", strong).exit_code == 0
    champion = client.get_model_version_by_alias("iris", "champion")
    assert str(champion.version) == "2"
    assert champion.tags["source_run_id"] == strong and "test_accuracy" in champion.tags
    # One split run, or two with the same data and params (a code change between the two fits).
    test_size = int(client.get_run(weak).data.params["test_size"])
    assert champion.tags["fittrack.comparison"].startswith("fair: champion version 1")
    assert champion.tags["fittrack.comparison"].endswith(f"all {test_size} test rows")

    # A low threshold, so that the second decision on these test rows already warns.
    monkeypatch.setattr(register_step, "TEST_SET_DECISIONS_WARNING", 1)
    again = _invoke("register", "--run-id", weak)
    assert again.exit_code == 0 and "lost to champion version 2" in again.output
    assert "have now decided 2 promotions" in again.output and "another --seed" in again.output
    assert str(client.get_model_version_by_alias("iris", "champion").version) == "2"
    assert str(client.get_model_version_by_alias("iris", "challenger").version) == "3"
    registers = _runs("register")
    last = registers[-1]
    assert last.data.tags["promoted"] == "false"
    assert last.data.metrics["champion_test_accuracy"] > last.data.metrics["challenger_test_accuracy"]
    # Same split: all its test rows; each fair decision on them is counted.
    assert last.data.metrics["compared_test_rows"] == test_size
    assert [r.data.metrics["test_set_decisions"] for r in registers] == [0, 1, 2]

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


def test_metric_no_run_has_and_an_unreadable_champion_are_one_line(tracking, monkeypatch):
    run_id = _train("--epochs", "1")
    result = CliRunner().invoke(cli, ["register", "--metric", "val_r2_score"])
    assert result.exit_code == 1
    assert "no finished run in experiment" in result.output and "logged metric 'val_r2_score'" in result.output

    # Reading the champion alias fails as the REST client fails on basic-auth's 403 (plain-text
    # body, so MLflow raises this MlflowException). A real 403 needs the auth server, so this one
    # client method is patched; the registry itself is real. It must not read as "no champion".
    def forbidden(self, name, alias):
        raise MlflowException("API request to endpoint /api/2.0/mlflow/registered-models/alias failed with "
                              "error code 403 != 200. Response body: 'Permission denied'",
                              error_code=PERMISSION_DENIED)

    monkeypatch.setattr(mlflow.MlflowClient, "get_model_version_by_alias", forbidden)
    result = CliRunner().invoke(cli, ["register", "--run-id", run_id])
    assert result.exit_code == 1, result.output
    line = "cannot read the champion of registered model 'iris': API request to endpoint"
    assert line in result.output and "Permission denied" in result.output
    assert "Traceback" not in result.output
    failed = _runs("register")[-1]
    assert failed.info.status == "FAILED" and failed.data.tags["error"].startswith(line)
    monkeypatch.undo()
    client = tracking.client
    assert _aliases(client, "iris") == {"challenger": "1"}
    assert client.get_model_version("iris", "1").tags["fittrack.promotion"] == "failed"


def _aliases(client, name):
    return {alias: str(version) for alias, version in client.get_registered_model(name).aliases.items()}


def _rows(part):
    return part.x.assign(target=part.y)


def test_promotion_compares_only_on_rows_neither_model_saw(tracking):
    client = tracking.client
    # Half of wine's rows, as a file of its own: the same columns, another data set.
    other_file = tracking.folder / "wine_half.csv"
    load_wine(as_frame=True).frame.iloc[::2].to_csv(other_file, index=False)
    other = _train("--epochs", "2", data=str(other_file))
    # Big test parts, so that another split's test part keeps enough rows its champion never saw.
    split_a = _train("--epochs", "2", "--seed", "1", "--test-fraction", "0.5", data="builtin:wine")
    split_b = _train("--epochs", "2", "--seed", "2", "--test-fraction", "0.5", data="builtin:wine")
    assert _invoke("register", "--run-id", other, "--model-name", "wine").exit_code == 0

    # Another data set: no fair comparison, so the champion stays unless asked.
    kept = _invoke("register", "--run-id", split_a)
    assert kept.exit_code == 0
    assert "version 2 stays challenger of 'wine': no fair comparison, champion version 1 was trained on another " \
           "data set" in kept.output and "--promote-without-comparison true promotes it" in kept.output
    reason = client.get_model_version("wine", "2").tags["fittrack.comparison"]
    assert reason.startswith("unfair: champion version 1 was trained on another data set (digest ")
    register = _runs("register")[-1]
    assert register.data.tags["fittrack.comparison"] == reason and register.data.tags["promoted"] == "false"
    assert register.data.metrics["compared_test_rows"] == 0 and "champion_test_accuracy" not in register.data.metrics
    assert _aliases(client, "wine") == {"champion": "1", "challenger": "2"}
    forced = _invoke("register", "--run-id", split_a, "--promote-without-comparison", "true")
    assert forced.exit_code == 0 and "without a fair comparison, as asked" in forced.output
    assert _aliases(client, "wine") == {"champion": "3", "challenger": "3"}
    assert client.get_model_version("wine", "3").tags["fittrack.comparison"].startswith("unfair: ")

    # The same data split another way: only the test rows of split B in neither train nor val of split A.
    assert _invoke("register", "--run-id", split_b).exit_code == 0
    register = _runs("register")[-1]
    compared = int(register.data.metrics["compared_test_rows"])
    ours = load_split(client.get_run(split_b).data.params["split_run_id"])
    theirs = load_split(client.get_run(split_a).data.params["split_run_id"])
    seen = {tuple(row) for part in ("train", "val") for row in _rows(theirs.parts[part]).itertuples(index=False)}
    unseen = np.array([tuple(row) not in seen for row in _rows(ours.parts["test"]).itertuples(index=False)])
    test_size = len(ours.parts["test"])
    assert 30 <= compared == unseen.sum() < test_size
    reason = register.data.tags["fittrack.comparison"]
    assert client.get_model_version("wine", "4").tags["fittrack.comparison"] == reason
    assert reason.startswith(f"fair: {compared} of the {test_size} test rows")
    rows, labels = ours.parts["test"].x[unseen], ours.parts["test"].y[unseen].astype(str)
    for role, run_id in (("champion", split_a), ("challenger", split_b)):
        predicted = np.asarray(mlflow.pyfunc.load_model(f"runs:/{run_id}/model").predict(rows)).astype(str)
        assert register.data.metrics[f"{role}_test_accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    won = register.data.metrics["challenger_test_accuracy"] > register.data.metrics["champion_test_accuracy"]
    assert register.data.tags["promoted"] == str(won).lower()
    assert register.data.metrics["test_set_decisions"] == 1


def test_candidate_is_ranked_at_the_epoch_its_model_holds(tracking):
    # Monitored by val_accuracy, which peaks early (epoch 1 here) while val_loss still falls.
    run_id = _train("--epochs", "4", "--monitor", "val_accuracy", "--learning-rate", "0.003")
    client = tracking.client
    history = {m.step: m.value for m in client.get_metric_history(run_id, "val_loss")}
    best_epoch = int(client.get_run(run_id).data.metrics["best_epoch"])
    assert history[best_epoch] > min(history.values()), "val_accuracy's best epoch is val_loss's best too"
    assert _invoke("register", "--run-id", run_id, "--metric", "val_loss").exit_code == 0
    version = client.get_model_version("iris", "1")
    assert float(version.tags["val_score_val_loss"]) == pytest.approx(history[best_epoch], abs=1e-6)


def test_a_better_baseline_competes_only_when_asked(tracking):
    # One epoch at a tiny learning rate: on iris, every baseline but the dummy is far better.
    weak = _train("--epochs", "1", "--learning-rate", "0.0005")
    client = tracking.client
    best = min(_runs("baseline"), key=lambda r: r.data.metrics["val_loss"])

    assert _invoke("register").exit_code == 0
    first = client.get_model_version("iris", "1")
    assert first.tags["source_run_id"] == weak and first.tags["fittrack.candidate_kind"] == "keras"
    assert best.data.metrics["val_loss"] < float(first.tags["val_score_val_loss"]), "the baseline must be better"
    assert _runs("register")[-1].data.tags["fittrack.candidate_kind"] == "keras"

    result = _invoke("register", "--run-id", weak, "--include-baselines", "true")
    # Compared as the plain cross-entropy: the Keras run's val_loss is its label-smoothed objective.
    weak_run = client.get_run(weak)
    assert float(weak_run.data.params["label_smoothing"]) > 0
    plain = {m.step: m.value for m in client.get_metric_history(weak, "val_cross_entropy")}
    keras_score = plain[int(weak_run.data.metrics["best_epoch"])]
    assert result.exit_code == 0, result.output
    assert (f"baseline {best.data.params['baseline']} (val_cross_entropy {best.data.metrics['val_loss']:.4f}) beats "
            f"the best Keras run {weak} ({keras_score:.4f})") in result.output
    second = client.get_model_version("iris", "2")
    assert second.tags["source_run_id"] == best.info.run_id
    assert second.tags["fittrack.candidate_kind"] == "baseline"
    assert second.tags["fittrack.baseline"] == best.data.params["baseline"]
    assert second.tags["val_score_val_loss"] == f"{best.data.metrics['val_loss']:.6f}"
    # It met the Keras champion on the same split's test rows, and won.
    assert second.tags["fittrack.comparison"].startswith("fair: champion version 1 has the same split")
    register = _runs("register")[-1]
    assert register.data.tags["fittrack.candidate_kind"] == "baseline" and register.data.tags["promoted"] == "true"
    assert register.data.tags["fittrack.baselines_run_id"] == best.data.tags["mlflow.parentRunId"]
    assert register.data.metrics["challenger_test_accuracy"] > register.data.metrics["champion_test_accuracy"]
    assert _aliases(client, "iris") == {"champion": "2", "challenger": "2"}

    test = load_split(best.data.tags["fittrack.split_run_id"]).parts["test"]
    predicted = mlflow.pyfunc.load_model("models:/iris@champion").predict(test.x)
    recomputed = accuracy_score(np.asarray(test.y).astype(str), np.asarray(predicted).astype(str))
    assert recomputed == pytest.approx(best.data.metrics["test_accuracy"], abs=1e-9)


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
