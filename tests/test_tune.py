"""Optuna search with real trials, a real MLflow store and real Keras fits on small data."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import mlflow
import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from pipelines.cli import cli
from tests.conftest import PROJECT_ROOT, free_port, mlflow_run

FIXED_SPACE = """
layers: 1
units: 16
dropout: 0.0
batch_size: 16
optimizer: adam
l2: 1.0e-6
learning_rate: {choices: [0.03, 1.0e-7]}
"""


def _tune(*args, check=True):
    result = CliRunner().invoke(cli, ["tune", "--quiet", "--data", "builtin:iris", *args], catch_exceptions=False)
    if check:
        assert result.exit_code == 0, result.output
    return result


def _trials(tracking):
    return tracking.runs("trial")


@contextlib.contextmanager
def optuna_dashboard(storage):
    """The real optuna-dashboard on 127.0.0.1, serving `storage`; yields a GET of its JSON API."""
    import urllib.request

    port = free_port()
    command = [shutil.which("optuna-dashboard", path=os.path.dirname(sys.executable)), storage,
               "--host", "127.0.0.1", "--port", str(port), "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def get(path):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
            return json.load(response)

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                get("/api/meta")
                break
            except OSError:
                assert process.poll() is None, process.stderr.read()
                assert time.monotonic() < deadline, "optuna-dashboard did not answer within 60 s"
                time.sleep(0.3)
        yield get
    finally:
        process.terminate()
        process.wait(timeout=30)


def _assert_dashboard_shows(storage, study_name, tracking, metric):
    """optuna-dashboard reads the study: every trial, with each epoch's value as its run logged it."""
    with optuna_dashboard(storage) as get:
        summaries = {s["study_name"]: s for s in get("/api/studies")["study_summaries"]}
        detail = get(f"/api/studies/{summaries[study_name]['study_id']}")
    study = optuna.load_study(study_name=study_name, storage=storage)
    assert sorted(t["number"] for t in detail["trials"]) == [t.number for t in study.trials]
    assert detail["has_intermediate_values"]
    shown = 0
    for trial in detail["trials"]:
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        if trial["state"] not in ("Complete", "Pruned"):
            continue
        history = sorted(tracking.client.get_metric_history(attrs["mlflow_run_id"], metric), key=lambda m: m.step)
        values = [(v["step"], float(v["value"])) for v in trial["intermediate_values"]]
        assert [step for step, _ in values] == [m.step for m in history]
        assert [value for _, value in values] == pytest.approx([m.value for m in history], rel=1e-6)
        shown += 1
    assert shown >= 1


def test_small_study_tracks_every_trial(tracking):
    _tune("--n-trials", "4", "--trial-epochs", "3", "--pruner", "none", "--metric", "val_accuracy")
    parent = tracking.only_run("tune")
    assert parent.info.status == "FINISHED"
    trials = _trials(tracking)
    assert len(trials) == 4
    client = tracking.client
    for run in trials:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        # The default study is scoped to the split: trials of another split never compete in it.
        assert run.data.tags["optuna.study_name"] == f"iris-mlp-{parent.data.tags['fittrack.split_run_id'][:8]}"
        assert run.data.tags["optuna.state"] == "COMPLETE"
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy"))
        assert steps == list(range(1, int(run.data.metrics["epochs_run"]) + 1))  # epochs numbered from 1
        assert {"checkpoints/best.keras", "checkpoints/best.json"} <= {
            a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
        # The test split is never seen during the search.
        assert not any(name.startswith("test_") for name in run.data.metrics)
    numbers = sorted(int(r.data.tags["optuna.trial_number"]) for r in trials)
    assert numbers == [0, 1, 2, 3]
    metrics = parent.data.metrics
    assert metrics["trials_complete"] == 4 and metrics["trials_pruned"] == 0 and metrics["trials_failed"] == 0
    best = max(trials, key=lambda r: r.data.metrics["best_val_accuracy"])
    assert metrics["best_value"] == pytest.approx(best.data.metrics["best_val_accuracy"])
    assert parent.data.tags["best_trial_run_id"] == best.info.run_id
    assert "best_learning_rate" in parent.data.params
    assert "test_accuracy" in metrics
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"plots/optimization_history.png", "plots/intermediate_values.png"} <= plots
    model = mlflow.pyfunc.load_model(f"runs:/{parent.info.run_id}/model")
    from sklearn.datasets import load_iris

    assert len(model.predict(load_iris(as_frame=True).data.iloc[:3])) == 3
    # The default storage, beside the SQLite tracking store, as the README's command opens it.
    storage = parent.data.tags["optuna.storage"]
    assert storage == f"sqlite:///{os.path.dirname(mlflow.get_tracking_uri()[len('sqlite:///'):])}/optuna.db"
    _assert_dashboard_shows(storage, parent.data.tags["optuna.study_name"], tracking, "val_accuracy")


def test_running_again_resumes_the_study(tracking):
    _tune("--n-trials", "2", "--trial-epochs", "2", "--pruner", "none")
    _tune("--n-trials", "3", "--trial-epochs", "2", "--pruner", "none")
    first, second = tracking.runs("tune")
    name = second.data.tags["optuna.study_name"]
    assert name == first.data.tags["optuna.study_name"]
    study = optuna.load_study(study_name=name, storage=second.data.tags["optuna.storage"])
    assert len(study.trials) == 3
    assert len(_trials(tracking)) == 3
    # The study's first trial is the train configuration, where the space holds its values; carried
    # on, the study does not run it again.
    from pipelines.search_space import DEFAULTS
    from pipelines.train import TrainConfig

    default = {name: getattr(TrainConfig(), name) for name in DEFAULTS["mlp"] if name != "l2"}
    assert study.trials[0].params == {**default, "l2": study.trials[0].params["l2"]}
    assert sum({k: t.params[k] for k in default} == default for t in study.trials) == 1
    trial0 = next(r for r in _trials(tracking) if r.data.tags["optuna.trial_number"] == "0")
    assert float(trial0.data.params["learning_rate"]) == TrainConfig().learning_rate
    # The study's leaderboard holds the trials of both tune runs, the earlier ones included.
    from tracking.compare import compare

    board = json.loads(compare(study=name, output_format="json"))
    assert {r["run_id"] for r in board} == {r.info.run_id for r in _trials(tracking)}
    assert {tracking.client.get_run(r["run_id"]).data.tags["mlflow.parentRunId"] for r in board} == {
        first.info.run_id, second.info.run_id}
    # Another split (another seed) is another study.
    _tune("--n-trials", "1", "--trial-epochs", "1", "--pruner", "none", "--seed", "5")
    assert tracking.runs("tune")[-1].data.tags["optuna.study_name"] != name


def test_hopeless_trial_is_pruned_and_its_run_killed(tracking, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(FIXED_SPACE)
    storage = f"sqlite:///{tmp_path}/contrived.db"
    study = optuna.create_study(study_name="contrived", storage=storage, direction="minimize")
    for rate in (0.03, 0.03, 0.03, 1e-7):  # three that learn set the median; then one that cannot
        study.enqueue_trial({"learning_rate": rate})
    # Not --quiet: off a terminal, a line per finished trial.
    result = CliRunner().invoke(cli, ["tune", "--data", "builtin:iris", "--n-trials", "4", "--trial-epochs", "8",
                                      "--study", "contrived", "--storage", storage, "--search-space", str(space),
                                      "--trial-patience", "20"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="contrived", storage=storage)
    hopeless = study.trials[3]
    judged = hopeless.last_step
    assert (f"fittrack: trial 3 pruned at epoch {judged}: val_loss "
            f"{hopeless.intermediate_values[judged]:.4g}") in result.output
    assert hopeless.state == TrialState.PRUNED
    run = tracking.client.get_run(hopeless.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED"
    assert run.data.tags["pruned"] == "true" and run.data.tags["optuna.state"] == "PRUNED"
    epochs = len(tracking.client.get_metric_history(run.info.run_id, "val_loss"))
    assert epochs < 8 and int(run.data.tags["pruned_epoch"]) == epochs
    assert all(t.state == TrialState.COMPLETE for t in study.trials[:3])


def test_a_failing_trial_is_recorded_retried_once_and_the_study_goes_on(tracking, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(FIXED_SPACE.replace("{choices: [0.03, 1.0e-7]}", "{choices: [0.03, 1.0e+6]}"))
    storage = f"sqlite:///{tmp_path}/failing.db"
    study = optuna.create_study(study_name="failing", storage=storage, direction="minimize")
    study.enqueue_trial({"learning_rate": 1e6})  # its loss explodes: the fit fails as diverged
    # The train configuration (learning rate 0.03) is enqueued next, as tune does for every study.
    _tune("--n-trials", "2", "--trial-epochs", "3", "--study", "failing", "--storage", storage,
          "--search-space", str(space), "--pruner", "none", "--learning-rate", "0.03")
    trials = optuna.load_study(study_name="failing", storage=storage).trials
    client = tracking.client
    runs = {t.number: client.get_run(t.user_attrs["mlflow_run_id"]) for t in trials if "mlflow_run_id" in t.user_attrs}
    first = trials[0]
    assert first.state == TrialState.FAIL
    retries = [t for t in trials if t.user_attrs.get("retry_of_trial") == 0]
    assert len(retries) == 1 and retries[0].params == first.params and retries[0].state == TrialState.FAIL
    retry = retries[0]
    for number in (first.number, retry.number):
        run = runs[number]
        assert run.info.status == "FAILED" and run.data.tags["optuna.state"] == "FAIL"
        assert "diverged" in run.data.tags["error"] and "learning_rate 1e+06" in run.data.tags["error"]
    assert runs[retry.number].data.tags["fittrack.retry_of"] == runs[first.number].info.run_id
    assert runs[retry.number].data.tags["optuna.retry_of_trial"] == "0"
    assert "fittrack.retry_of" not in runs[first.number].data.tags
    # max_retries 1: the retry that failed is not tried a third time.
    assert not [t for t in trials if t.user_attrs.get("retry_of_trial") == retry.number]
    # The study went on after the failure: the next trial (the enqueued train configuration) completed.
    assert trials[1].params == {"learning_rate": 0.03} and trials[1].state == TrialState.COMPLETE
    assert runs[1].info.status == "FINISHED"
    failed = [t for t in trials if t.state == TrialState.FAIL]
    parent = tracking.only_run("tune")
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials_failed"] == len(failed)


@pytest.fixture
def bad_yaml(tmp_path):
    files = {
        "broken.yaml": "learning_rate: {low: 1, high",
        "unknown.yaml": "momentum: {low: 0.1, high: 0.9}",
        "inverted.yaml": "dropout: {low: 0.5, high: 0.1}",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.mark.parametrize("args, message", [
    (["--sampler", "annealing"], "sampler must be one of tpe, random, cmaes, gp, got 'annealing'"),
    (["--pruner", "patient"], "pruner must be one of median, hyperband, successive_halving, none, got 'patient'"),
    (["--metric", "val_speed"], "unknown metric 'val_speed'"),
    (["--metric", "val_r2_score"], "metric 'val_r2_score' is not logged for classification"),
    (["--search-space", "{d}/broken.yaml"], "is not valid YAML"),
    (["--search-space", "{d}/unknown.yaml"], "names unknown parameter 'momentum'"),
    (["--search-space", "{d}/inverted.yaml"], "'dropout' has low 0.5 above high 0.1"),
    (["--storage", "postgresql://postgres@127.0.0.1:1/nowhere"], "cannot reach storage 'postgresql://postgres@127.0.0.1:1/nowhere'"),
    (["--n-trials", "0"], "n_trials must be >= 1, got 0"),
    (["--max-retries", "-1"], "max_retries must be >= 0, got -1"),
])
def test_bad_tune_input_is_one_line(tracking, bad_yaml, args, message):
    result = _tune(*[a.format(d=bad_yaml) for a in args], check=False)
    assert result.exit_code != 0
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and message in errors[0], result.output
    assert "Traceback" not in result.output
    assert all(r.info.status == "FAILED" for r in tracking.runs("tune"))


def test_bad_tune_input_under_mlflow_run_fails_the_parent(tracking):
    done = mlflow_run("-e", "tune", "-P", "data=builtin:iris", "-P", "sampler=annealing")
    assert done.returncode != 0
    failed = tracking.runs(status="FAILED")
    assert len(failed) == 1 and "sampler must be one of tpe, random, cmaes, gp, got 'annealing'" in failed[0].data.tags["error"]


def _assert_consistent(study, tracking, n_trials):
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) >= n_trials
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    # A worker stopped between asking for a trial and opening its run leaves a failed trial without one.
    assert all(t.state == TrialState.FAIL for t in trials if "mlflow_run_id" not in t.user_attrs)
    run_ids = [t.user_attrs["mlflow_run_id"] for t in trials if "mlflow_run_id" in t.user_attrs]
    assert len(set(run_ids)) == len(run_ids)
    assert {r.info.run_id for r in _trials(tracking)} == set(run_ids)
    assert tracking.runs(status="RUNNING") == []


@pytest.mark.e2e
def test_two_workers_share_one_postgres_study(tracking, postgres_database):
    _tune("--n-trials", "6", "--trial-epochs", "3", "--workers", "2", "--storage", postgres_database, "--study", "shared")
    study = optuna.load_study(study_name="shared", storage=postgres_database)
    _assert_consistent(study, tracking, 6)
    assert len({t.user_attrs["pid"] for t in study.trials}) == 2, "both workers should have run trials"
    _assert_dashboard_shows(postgres_database, "shared", tracking, "val_loss")


@pytest.mark.e2e
def test_a_killed_worker_leaves_a_failed_trial_and_the_study_completes(tracking, postgres_database):
    command = [sys.executable, "-m", "pipelines.cli", "tune", "--quiet", "--data", "builtin:iris",
               "--n-trials", "6", "--trial-epochs", "6", "--workers", "2", "--storage", postgres_database,
               "--study", "killed", "--heartbeat-interval", "1", "--grace-period", "4", "--pruner", "none"]
    main = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    victim = None
    deadline = time.monotonic() + 240
    while victim is None and time.monotonic() < deadline and main.poll() is None:
        time.sleep(0.5)
        try:
            study = optuna.load_study(study_name="killed", storage=postgres_database)
        except KeyError:
            continue
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            pid = trial.user_attrs.get("pid")
            if pid and pid != main.pid and trial.user_attrs.get("mlflow_run_id"):
                victim = (pid, trial.number, trial.user_attrs["mlflow_run_id"])
                os.kill(pid, signal.SIGKILL)
                break
    assert victim is not None, "no worker trial was seen running"
    output, _ = main.communicate(timeout=400)
    assert main.returncode == 0, output[-3000:]
    study = optuna.load_study(study_name="killed", storage=postgres_database)
    killed = study.trials[victim[1]]
    assert killed.state == TrialState.FAIL
    run = tracking.client.get_run(victim[2])
    assert run.info.status == "FAILED" and "heartbeats" in run.data.tags["error"]
    _assert_consistent(study, tracking, 6)


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (Linux /proc; the test machines are Linux)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return found


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie has ended
    except OSError:
        return True


@pytest.mark.e2e
def test_a_killed_tune_process_on_sqlite_stops_its_worker_then_resumes_and_completes(tracking, tmp_path):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    command = [sys.executable, "-m", "pipelines.cli", "tune", "--quiet", "--data", "builtin:iris",
               "--n-trials", "3", "--trial-epochs", "6", "--storage", storage, "--study", "solo",
               "--heartbeat-interval", "1", "--grace-period", "3", "--pruner", "none"]
    first = subprocess.Popen([*command, "--workers", "2"], cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    victim, workers, deadline = None, [], time.monotonic() + 180
    while victim is None and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.5)
        try:
            running = optuna.load_study(study_name="solo", storage=storage).get_trials(
                deepcopy=False, states=(TrialState.RUNNING,))
        except KeyError:
            continue
        mine = [t for t in running if t.user_attrs.get("pid") == first.pid and t.user_attrs.get("mlflow_run_id")]
        workers = _children(first.pid)
        if mine and workers:
            victim = mine[0]
            first.send_signal(signal.SIGKILL)
    first.wait()
    assert victim is not None, "no trial was seen running"
    # The worker notices its parent is gone and stops instead of training on unsupervised.
    deadline = time.monotonic() + 30
    while not all(_gone(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert all(_gone(pid) for pid in workers), f"worker(s) {workers} still running after the tune process died"
    time.sleep(4)  # past the grace period: the killed trial's heartbeat is stale
    again = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    study = optuna.load_study(study_name="solo", storage=storage)
    assert study.trials[victim.number].state == TrialState.FAIL
    assert tracking.client.get_run(victim.user_attrs["mlflow_run_id"]).info.status == "FAILED"
    tunes = tracking.runs("tune")
    assert [r.info.status for r in tunes] == ["FAILED", "FINISHED"]
    assert "stopped without ending its run" in tunes[0].data.tags["error"]
    _assert_consistent(study, tracking, 3)


def test_cmaes_sampler_and_hyperband_pruner_run(tracking):
    _tune("--n-trials", "3", "--trial-epochs", "2", "--sampler", "cmaes", "--pruner", "hyperband")
    parent = tracking.only_run("tune")
    assert parent.info.status == "FINISHED"
    assert parent.data.params["sampler"] == "cmaes" and parent.data.params["pruner"] == "hyperband"
    assert len(_trials(tracking)) == 3


def test_successive_halving_judges_a_trial_at_its_first_rung_against_the_one_before(tracking, tmp_path):
    from pipelines.tune import MIN_RESOURCE

    space = tmp_path / "space.yaml"
    space.write_text(FIXED_SPACE)
    storage = f"sqlite:///{tmp_path}/halving.db"
    study = optuna.create_study(study_name="halving", storage=storage, direction="minimize")
    for rate in (0.03, 1e-7):  # one that learns, then one that cannot
        study.enqueue_trial({"learning_rate": rate})
    _tune("--n-trials", "2", "--trial-epochs", "6", "--study", "halving", "--storage", storage,
          "--search-space", str(space), "--trial-patience", "20", "--pruner", "successive_halving",
          "--learning-rate", "0.03")
    learner, hopeless = optuna.load_study(study_name="halving", storage=storage).trials[:2]
    # A trial's Optuna step is its epoch's number, as its MLflow step is.
    assert learner.state == TrialState.COMPLETE and learner.last_step == 6
    # Judged after MIN_RESOURCE epochs, the first rung, where the learner was better: pruned there.
    assert hopeless.state == TrialState.PRUNED and hopeless.last_step == MIN_RESOURCE
    run = tracking.client.get_run(hopeless.user_attrs["mlflow_run_id"])
    assert run.data.tags["pruned_epoch"] == str(MIN_RESOURCE)
    history = tracking.client.get_metric_history(run.info.run_id, "val_loss")
    assert sorted(m.step for m in history) == list(range(1, MIN_RESOURCE + 1))


def test_gp_sampler_says_what_it_needs(tracking):
    try:
        import torch  # noqa: F401
    except ImportError:
        result = _tune("--sampler", "gp", check=False)
        assert result.exit_code == 1
        assert "sampler 'gp' needs PyTorch: pip install torch" in result.output
    else:
        _tune("--n-trials", "2", "--trial-epochs", "2", "--sampler", "gp")
        assert tracking.only_run("tune").info.status == "FINISHED"
