"""`fittrack compare`: the leaderboard, its CSV/JSON, the curves PNG and bad input, on a real store."""

import csv
import io
import json
import time

import mlflow
import pytest
from click.testing import CliRunner

from pipelines.cli import cli

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _invoke(*args):
    return CliRunner().invoke(cli, ["compare", *args])


def _log_run(name, val_loss, val_accuracy=None, step="train", test=None, diagnosis="good_fit", params=None,
             tags=None, status="FINISHED"):
    """A run logged as fittrack logs one: every epoch at step = its number from 1, params, the diagnosis tag."""
    with mlflow.start_run(run_name=name) as run:
        mlflow.set_tags({"fittrack.step": step, "diagnosis": diagnosis, **(tags or {})})
        mlflow.log_params({"model": "auto", "resolved_model": "mlp", "layers": 2, "units": 64, "dropout": 0.2,
                           "learning_rate": 0.001, "optimizer": "adam", "batch_size": 32, **(params or {})})
        for epoch, value in enumerate(val_loss, start=1):
            mlflow.log_metric("val_loss", value, step=epoch)
            mlflow.log_metric("loss", value * 0.9, step=epoch)
            if val_accuracy is not None:
                mlflow.log_metric("val_accuracy", val_accuracy[epoch - 1], step=epoch)
        mlflow.log_metric("epochs_run", len(val_loss))
        for key, value in (test or {}).items():
            mlflow.log_metric(key, value)
        run_id = run.info.run_id
    if status != "FINISHED":
        mlflow.MlflowClient().set_terminated(run_id, status)
    return run_id


@pytest.fixture
def three_runs(tracking):
    # "overfit" reaches the lowest val_loss (0.30 at epoch 3) and then climbs: it still ranks first.
    ids = {
        "steady": _log_run("steady", [0.9, 0.6, 0.45, 0.40], [0.6, 0.7, 0.8, 0.85],
                           test={"test_loss": 0.41, "test_accuracy": 0.84}),
        "overfit": _log_run("overfit", [0.8, 0.5, 0.30, 0.35, 0.50, 0.70], [0.7, 0.8, 0.9, 0.88, 0.86, 0.84],
                            diagnosis="overfitting", params={"learning_rate": 0.02, "units": 128},
                            test={"test_loss": 0.33, "test_accuracy": 0.89}),
        "slow": _log_run("slow", [1.2, 1.1, 1.0], [0.5, 0.55, 0.6], diagnosis="underfitting",
                         params={"optimizer": "sgd"}, test={"test_loss": 1.02, "test_accuracy": 0.58}),
    }
    # Runs compare ignores: a baseline (one point, not a Keras fit) and a tune parent without a history.
    _log_run("baseline-linear", [0.1], step="baseline")
    with mlflow.start_run(run_name="tune-x"):
        mlflow.set_tag("fittrack.step", "tune")
        mlflow.log_metric("best_value", 0.01)
    return ids


def _json(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_table_ranks_by_best_epoch_in_the_metrics_direction(three_runs):
    result = _invoke()
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = lines[0].split()
    assert header[:4] == ["rank", "run_id", "run_name", "fittrack.step"]
    assert "best_val_loss" in header and "test_loss" in header and "diagnosis" in header
    assert [line.split()[2] for line in lines[1:]] == ["overfit", "steady", "slow"]
    # Aligned columns: every row as wide as the header, and each value under its column's header.
    column = lines[0].index("best_val_loss")
    assert lines[1][column:column + len("best_val_loss")].strip() == "0.3000"
    assert "baseline-linear" not in result.stdout and "tune-x" not in result.stdout

    maximised = _invoke("--metric", "val_accuracy")
    assert [line.split()[2] for line in maximised.stdout.splitlines()[1:]] == ["overfit", "steady", "slow"]
    assert "test_accuracy" in maximised.stdout.splitlines()[0]


def test_json_holds_best_epoch_test_score_params_and_duration(three_runs):
    rows = _json(_invoke("--format", "json"))
    assert [r["run_name"] for r in rows] == ["overfit", "steady", "slow"]
    overfit = rows[0]
    assert overfit["run_id"] == three_runs["overfit"] and overfit["rank"] == 1
    assert overfit["best_val_loss"] == pytest.approx(0.30) and overfit["best_epoch"] == 3
    assert overfit["test_loss"] == pytest.approx(0.33) and overfit["epochs_run"] == 6
    assert overfit["diagnosis"] == "overfitting" and overfit["status"] == "FINISHED"
    assert overfit["model"] == "mlp" and overfit["units"] == 128 and overfit["learning_rate"] == 0.02
    assert overfit["duration_s"] >= 0
    assert rows[2]["optimizer"] == "sgd" and rows[2]["best_epoch"] == 3
    assert "l2" not in overfit  # no run logged it

    by_accuracy = _json(_invoke("--format", "json", "--metric", "val_accuracy"))
    assert by_accuracy[0]["best_val_accuracy"] == pytest.approx(0.9) and by_accuracy[0]["best_epoch"] == 3
    assert by_accuracy[1]["best_epoch"] == 4 and by_accuracy[0]["test_accuracy"] == pytest.approx(0.89)


def test_csv_to_a_file_with_limit(three_runs, tracking):
    result = _invoke("--format", "csv", "--output", "out/board.csv", "--limit", "2")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    with open(tracking.folder / "out" / "board.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["run_name"] for r in rows] == ["overfit", "steady"]
    assert {"run_id", "model", "layers", "units", "dropout", "learning_rate", "optimizer", "batch_size",
            "best_val_loss", "best_epoch", "test_loss", "epochs_run", "diagnosis", "duration_s"} <= set(rows[0])
    assert float(rows[1]["best_val_loss"]) == pytest.approx(0.40) and rows[1]["best_epoch"] == "4"


def test_study_selects_its_trials_and_keeps_pruned_ones(tracking):
    _log_run("steady", [0.5, 0.4])
    study = {"optuna.study_name": "iris-mlp"}
    _log_run("trial-0", [0.9, 0.7, 0.6], step="trial", tags=study)
    _log_run("trial-1", [1.0, 1.1], step="trial", tags=study, status="KILLED")
    _log_run("trial-0", [0.2], step="trial", tags={"optuna.study_name": "other"})

    rows = _json(_invoke("--study", "iris-mlp", "--format", "json"))
    assert [(r["run_name"], r["status"]) for r in rows] == [("trial-0", "FINISHED"), ("trial-1", "KILLED")]
    # Trial runs have no test split, so no test score: blank, not zero.
    assert rows[0]["test_loss"] is None and rows[0]["fittrack.step"] == "trial"

    # By default the experiment's train runs and trial runs both compete.
    assert [r["run_name"] for r in _json(_invoke("--format", "json"))] == ["trial-0", "steady", "trial-0", "trial-1"]


def test_filter_and_run_ids_narrow_the_selection(three_runs):
    rows = _json(_invoke("--filter", "params.optimizer = 'adam'", "--format", "json"))
    assert [r["run_name"] for r in rows] == ["overfit", "steady"]

    rows = _json(_invoke("--run-id", three_runs["slow"], "--run-id", three_runs["steady"], "--format", "json"))
    assert [r["run_name"] for r in rows] == ["steady", "slow"]


def test_plot_is_a_png_of_every_curve(three_runs, tracking):
    result = _invoke("--plot", "plots/curves.png")
    assert result.exit_code == 0, result.output
    assert "overfit" in result.stdout  # the table still comes
    png = (tracking.folder / "plots" / "curves.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 10_000
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (800, 500)


def test_compare_opens_no_run(three_runs, tracking):
    before = len(tracking.runs())
    assert _invoke().exit_code == 0
    assert len(tracking.runs()) == before and mlflow.active_run() is None


@pytest.mark.parametrize("args, named", [
    (["--experiment", "no-such-experiment"], "experiment 'no-such-experiment' not found"),
    (["--study", "no-such-study"], "study 'no-such-study' has no trial runs"),
    (["--metric", "val_auc"], "no run logged metric 'val_auc'"),
    (["--filter", "params.optimizer == 'adam'"], "invalid filter \"params.optimizer == 'adam'\""),
    (["--run-id", "0123456789abcdef"], "run '0123456789abcdef' not found"),
    (["--plot", "curves.svg"], "plot must be a .png file, got 'curves.svg'"),
])
def test_bad_input_is_one_line_naming_the_value(three_runs, tracking, args, named):
    result = _invoke(*args, "--output", "board.txt")
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and named in lines[0], result.output
    assert not (tracking.folder / "board.txt").exists()


def test_metric_error_lists_what_was_logged(three_runs):
    result = _invoke("--metric", "val_r2_score")
    assert result.exit_code == 1
    assert "validation metrics logged there: val_accuracy, val_loss" in result.output


def test_empty_experiment_says_so(tracking):
    result = _invoke()
    assert result.exit_code == 1 and "experiment 'test' has no train or trial runs" in result.output


def test_a_real_training_run_compares_under_kerass_names(tracking):
    started = time.time()
    trained = CliRunner().invoke(cli, ["train", "--data", "builtin:iris", "--epochs", "3", "--quiet",
                                       "--tensorboard", "false", "--learning-rate", "0.02"], catch_exceptions=False)
    assert trained.exit_code == 0, trained.output
    # A weaker run beside it, logged by hand under the same names: the real one must rank first.
    _log_run("weak", [1.5, 1.4], [0.05, 0.1])
    client = tracking.client
    rows = _json(_invoke("--metric", "val_accuracy", "--format", "json", "--plot", "curves.png"))
    assert [r["run_name"] for r in rows][1:] == ["weak"]
    row = rows[0]
    assert row["fittrack.step"] == "train" and row["status"] == "FINISHED"
    history = client.get_metric_history(row["run_id"], "val_accuracy")
    assert sorted(m.step for m in history) == [1, 2, 3] and row["epochs_run"] == 3
    best = max(history, key=lambda m: (m.value, -m.step))
    assert row["best_val_accuracy"] == pytest.approx(best.value) and row["best_epoch"] == best.step
    assert row["test_accuracy"] == pytest.approx(client.get_run(row["run_id"]).data.metrics["test_accuracy"])
    # Three epochs may still be improving (undertrained) or not: the column is the run's own tag.
    assert row["diagnosis"] == client.get_run(row["run_id"]).data.tags["diagnosis"]
    assert row["diagnosis"] in ("overfitting", "underfitting", "undertrained", "good_fit")
    assert row["model"] == "mlp" and row["learning_rate"] == 0.02 and row["optimizer"] == "adam"
    assert 0 < row["duration_s"] < time.time() - started
    assert (tracking.folder / "curves.png").read_bytes().startswith(PNG_SIGNATURE)
    # The leaderboard as a parseable CSV too, in the same order.
    table = list(csv.DictReader(io.StringIO(_invoke("--metric", "val_accuracy", "--format", "csv").stdout)))
    assert [r["run_id"] for r in table] == [r["run_id"] for r in rows]
