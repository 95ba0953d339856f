"""The real `mlflow run . --env-manager local`, in a temporary tracking store."""

import json
import os

import mlflow
import numpy as np
import pytest

from tests.conftest import mlflow_run

pytestmark = pytest.mark.e2e

FAST = ["-P", "epochs=3", "-P", "tensorboard=false", "-P", "n_trials=2", "-P", "tune_epochs=2"]


def test_main_runs_the_whole_pipeline_and_reuses_split_and_baselines(tracking):
    done = mlflow_run(*FAST)
    assert done.returncode == 0, done.stderr[-3000:]
    main = tracking.only_run("main")
    split = tracking.only_run("split")
    train = tracking.only_run("train")
    steps = {step: tracking.only_run(step) for step in ("split", "baselines", "train", "tune", "register")}
    assert main.info.status == "FINISHED" and all(r.info.status == "FINISHED" for r in steps.values())
    assert all(r.data.tags["mlflow.parentRunId"] == main.info.run_id for r in steps.values())
    assert train.data.params["split_run_id"] == split.info.run_id
    assert steps["tune"].data.params["split_run_id"] == split.info.run_id
    assert steps["baselines"].data.params["split_run_id"] == split.info.run_id
    assert main.data.metrics["test_accuracy"] == train.data.metrics["test_accuracy"]
    # Register chose between the train run and the tune run by validation loss.
    register = steps["register"]
    assert register.data.params["run_id"] == f"{train.info.run_id},{steps['tune'].info.run_id}"
    champion = tracking.client.get_model_version_by_alias("digits", "champion")
    assert champion.tags["source_run_id"] in (train.info.run_id, steps["tune"].info.run_id)
    assert main.data.metrics["champion_test_accuracy"] == pytest.approx(float(champion.tags["test_accuracy"]), abs=1e-6)
    assert main.data.metrics["baseline_test_accuracy"] == steps["baselines"].data.metrics["best_test_accuracy"]
    baselines = tracking.runs("baseline")
    assert len(baselines) == 3 and all(b.data.tags["mlflow.parentRunId"] == steps["baselines"].info.run_id
                                       for b in baselines)

    client = tracking.client
    for name in ("loss", "val_loss", "accuracy", "val_accuracy", "val_auc", "val_f1_score"):
        assert sorted(m.step for m in client.get_metric_history(train.info.run_id, name)) == [0, 1, 2], name
    val_loss = client.get_metric_history(train.info.run_id, "val_loss")
    checkpoints = mlflow.artifacts.download_artifacts(run_id=train.info.run_id, artifact_path="checkpoints")
    info = json.load(open(os.path.join(checkpoints, "best.json")))
    assert info["epoch"] == min(val_loss, key=lambda m: m.value).step

    from sklearn.datasets import load_digits

    digits = load_digits()
    model = mlflow.pyfunc.load_model(f"runs:/{train.info.run_id}/model")
    predicted = np.asarray(model.predict(digits.images[:50]))
    assert (predicted == digits.target[:50]).mean() > 0.5  # three epochs of an augmented CNN; chance is 0.1

    again = mlflow_run(*FAST)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(tracking.runs("split")) == 1, "the second main run should reuse the finished split"
    assert len(tracking.runs("baselines")) == 1, "and the finished baselines"
    assert len(tracking.runs("train")) == 2 and len(tracking.runs("register")) == 2


def test_train_entry_point_alone_makes_its_split(tracking):
    done = mlflow_run("-e", "train", "-P", "data=builtin:iris", "-P", "epochs=2", "-P", "tensorboard=false")
    assert done.returncode == 0, done.stderr[-3000:]
    train = tracking.only_run("train")
    split = tracking.only_run("split")
    assert train.data.params["split_run_id"] == split.info.run_id
    assert "mlflow.parentRunId" not in split.data.tags


@pytest.mark.parametrize("args, message", [
    (["-P", "data=absent.csv"], "data file not found: 'absent.csv'"),
    (["-e", "train", "-P", "epochs=0"], "Invalid value for '--epochs': 0 is not in the range x>=1"),
    (["-e", "train", "-P", "data=builtin:diabetes", "-P", "monitor=val_accuracy"],
     "unknown monitor 'val_accuracy' for regression"),
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
