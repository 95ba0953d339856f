"""Registering models with champion/challenger aliases, against a real store and registry."""

import mlflow
import numpy as np
from click.testing import CliRunner
from sklearn.datasets import load_iris

from pipelines.cli import cli


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
