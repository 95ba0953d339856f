"""The real `mlflow run . --env-manager local`, in a temporary tracking store."""

import json
import re
import os

import mlflow
import numpy as np
import pytest

from tests.conftest import mlflow_run

pytestmark = pytest.mark.e2e

FAST = ["-P", "epochs=3", "-P", "tensorboard=false", "-P", "tune_trials=2", "-P", "tune_epochs=2"]


def test_main_runs_the_whole_pipeline_and_reuses_split_and_baselines(tracking):
    done = mlflow_run(*FAST)
    assert done.returncode == 0, done.stderr[-3000:]
    (main,) = _entry_runs(tracking, "main")
    steps = {step: _entry_runs(tracking, step) for step in ("split", "baselines", "train", "tune", "register")}
    assert all(len(found) == 1 for found in steps.values()), {k: len(v) for k, v in steps.items()}
    steps = {step: found[0] for step, found in steps.items()}
    split, train = steps["split"], steps["train"]
    assert main.info.status == "FINISHED" and all(r.info.status == "FINISHED" for r in steps.values())
    assert all(r.data.tags["mlflow.parentRunId"] == main.info.run_id for r in steps.values())
    assert all(r.data.tags["fittrack.step"] == step for step, r in steps.items())
    assert {r.data.tags["mlflow.runName"] for r in (main, *steps.values())} == {
        "main-digits", "split-digits", "baselines-digits", "train-digits", "tune-digits", "register-digits"}
    for step, run in steps.items():  # every step's run holds its work: metrics, child runs or artifacts
        assert run.data.metrics or tracking.client.list_artifacts(run.info.run_id) or tracking.client.search_runs(
            [tracking.experiment_id], f"tags.`mlflow.parentRunId` = '{run.info.run_id}'"), step
    _assert_no_other_top_level_run(tracking, {main.info.run_id})
    assert train.data.tags["fittrack.split_run_id"] == split.info.run_id
    assert steps["tune"].data.tags["fittrack.split_run_id"] == split.info.run_id
    assert steps["baselines"].data.params["split_run_id"] == split.info.run_id
    assert main.data.metrics["test_accuracy"] == train.data.metrics["test_accuracy"]
    # Register chose between the train run and the tune run by validation loss.
    register = steps["register"]
    assert register.data.params["run_id"] == f"{train.info.run_id},{steps['tune'].info.run_id}"
    champion = tracking.client.get_model_version_by_alias("digits", "champion")
    assert champion.tags["source_run_id"] in (train.info.run_id, steps["tune"].info.run_id)
    assert main.data.metrics["champion_test_accuracy"] == pytest.approx(float(champion.tags["test_accuracy"]), abs=1e-6)
    assert main.data.metrics["baseline_test_accuracy"] == steps["baselines"].data.metrics["best_test_accuracy"]
    # The job ends with its summary: every step's run, the champion against the best baseline, where to look.
    summary = done.stderr[done.stderr.rindex(f"fittrack: main run {main.info.run_id}, its steps:"):]
    for step, run in steps.items():
        assert f"  {step:<10} {run.info.run_id}" in summary, step
    assert "fittrack: champion models:/digits@champion (version 1, " in summary
    assert f"best baseline ({steps['baselines'].data.tags['best_baseline']})" in summary and "margin " in summary
    assert ("fittrack: warning: the champion is below the best baseline" in summary) == (
        main.data.metrics["champion_margin_test_accuracy"] < 0)
    assert (f"mlflow ui --backend-store-uri {tracking.uri}  then  "
            f"http://127.0.0.1:5000/#/experiments/{tracking.experiment_id}/runs/{main.info.run_id}") in summary
    assert f"optuna-dashboard {steps['tune'].data.tags['optuna.storage']}" in summary
    assert len(summary.strip().splitlines()) <= 11
    # Quiet by default: no start-up lines of TensorFlow's, absl's or MLflow's, no progress bar but a
    # line per trial. (conftest's TF_CPP_MIN_LOG_LEVEL=2 lets TensorFlow's C++ ERROR lines through here.)
    for noise in ("absl::InitializeLog", "oneDNN custom operations", "Add type hints", "Validating input example",
                  "Best trial: "):
        assert noise not in done.stderr, noise
    assert done.stderr.count("=== Running command") == 1  # the outer `mlflow run`'s, for main; none of main's
    assert "fittrack: trial 0 complete: val_loss " in done.stderr
    pruned = re.findall(r"fittrack: trial \d+ pruned at epoch (\d+): val_loss ", done.stderr)
    assert len(pruned) == int(steps["tune"].data.metrics["trials_pruned"])
    assert tracking.client.get_experiment(tracking.experiment_id).tags["mlflow.experimentKind"] == \
        "custom_model_development"
    baselines = tracking.runs("baseline")
    assert {b.data.params["baseline"] for b in baselines} == {"dummy", "linear", "svm", "hist_gradient_boosting"}
    assert all(b.data.tags["mlflow.parentRunId"] == steps["baselines"].info.run_id for b in baselines)
    assert all(b.data.tags["fittrack.model_uri"] for b in baselines)

    client = tracking.client
    for name in ("loss", "val_loss", "accuracy", "val_accuracy", "val_auc", "val_f1_score"):
        assert sorted(m.step for m in client.get_metric_history(train.info.run_id, name)) == [1, 2, 3], name
    val_loss = client.get_metric_history(train.info.run_id, "val_loss")
    checkpoints = mlflow.artifacts.download_artifacts(run_id=train.info.run_id, artifact_path="checkpoints")
    info = json.load(open(os.path.join(checkpoints, "best.json")))
    assert info["epoch"] == min(val_loss, key=lambda m: m.value).step

    from sklearn.datasets import load_digits

    digits = load_digits()
    model = mlflow.pyfunc.load_model(f"runs:/{train.info.run_id}/model")
    predicted = np.asarray(model.predict(digits.images[:50]))
    assert (predicted == digits.target[:50]).mean() > 0.5  # three epochs of an augmented CNN; chance is 0.1

    # Reuse is the split and baselines steps' own decision, whichever entry point calls them: a
    # one-epoch train costs a fraction of a second main job and asks the same question.
    again = mlflow_run("-e", "train", "-P", "epochs=1", "-P", "tensorboard=false")
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(tracking.runs("split")) == 1, "a later train should reuse main's finished split"
    assert len(tracking.runs("baselines")) == 1, "and its finished baselines"
    assert len(tracking.runs("train")) == 2


def _entry_runs(tracking, entry_point):
    """The runs `mlflow run` made for an entry point, found as a user finds them: by its tag."""
    return tracking.client.search_runs(
        [tracking.experiment_id], f"tags.`mlflow.project.entryPoint` = '{entry_point}'")


def _assert_no_other_top_level_run(tracking, owners):
    """Every run is an entry point's run or sits (at any depth) under one: nothing empty beside them."""
    everything = {r.info.run_id: r for r in tracking.runs()}
    for run in everything.values():
        top = run
        while "mlflow.parentRunId" in top.data.tags:
            top = everything[top.data.tags["mlflow.parentRunId"]]
        assert top.info.run_id in owners, (run.data.tags.get("mlflow.runName"), run.data.tags.get("fittrack.step"))


def test_train_and_tune_entry_points_do_their_work_in_the_run_mlflow_made(tracking):
    done = mlflow_run("-e", "train", "-P", "data=builtin:iris", "-P", "epochs=2", "-P", "tensorboard=false")
    assert done.returncode == 0, done.stderr[-3000:]
    (train,) = _entry_runs(tracking, "train")
    assert train.info.status == "FINISHED" and "mlflow.source.git.commit" in train.data.tags
    assert train.data.tags["fittrack.step"] == "train" and train.data.tags["mlflow.runName"] == "train-iris"
    assert sorted(m.step for m in tracking.client.get_metric_history(train.info.run_id, "val_loss")) == [1, 2]
    assert "test_accuracy" in train.data.metrics and train.data.tags["fittrack.model_uri"]
    # The split and the baselines it needed first are runs nested under it, not beside it.
    split, baselines = tracking.only_run("split"), tracking.only_run("baselines")
    assert split.data.tags["mlflow.parentRunId"] == train.info.run_id == baselines.data.tags["mlflow.parentRunId"]
    assert train.data.tags["fittrack.split_run_id"] == split.info.run_id
    assert split.data.tags["mlflow.runName"] == "split-iris"

    # Another seed: tune makes its own split too, and keeps it, its trials and its report in its run.
    done = mlflow_run("-e", "tune", "-P", "data=builtin:iris", "-P", "seed=3", "-P", "n_trials=2", "-P", "trial_epochs=2")
    assert done.returncode == 0, done.stderr[-3000:]
    (tune,) = _entry_runs(tracking, "tune")
    assert tune.info.status == "FINISHED" and tune.data.tags["mlflow.runName"] == "tune-iris"
    trials = tracking.runs("trial")
    assert len(trials) == 2 and all(t.data.tags["mlflow.parentRunId"] == tune.info.run_id for t in trials)
    assert "best_value" in tune.data.metrics and "test_accuracy" in tune.data.metrics
    tune_split = tracking.client.get_run(tune.data.tags["fittrack.split_run_id"])
    assert tune_split.data.tags["mlflow.parentRunId"] == tune.info.run_id
    # Where the study lives, though `mlflow run` logged the params study and storage as ''.
    assert tune.data.tags["optuna.study_name"] == f"iris-mlp-{tune_split.info.run_id[:8]}"
    assert tune.data.tags["optuna.storage"].startswith("sqlite:///") and tune.data.tags["optuna.storage"].endswith(
        "optuna.db")
    _assert_no_other_top_level_run(tracking, {train.info.run_id, tune.info.run_id})


@pytest.mark.parametrize("args, message", [
    (["-P", "data=absent.csv"], "data file not found: 'absent.csv'"),
    (["-e", "train", "-P", "epochs=0"], "epochs must be >= 1, got 0"),
    (["-e", "train", "-P", "data=builtin:diabetes", "-P", "monitor=val_accuracy"],
     "monitor must be one of val_loss, val_mse, val_mae, val_r2_score for regression, got 'val_accuracy'"),
])
def test_bad_input_fails_the_run_with_the_reason(tracking, args, message):
    done = mlflow_run(*args)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    failed = tracking.runs(status="FAILED")
    assert failed and all(message in r.data.tags.get("error", "") for r in failed)
    assert tracking.runs(status="FINISHED") == []
