"""The tune step: an Optuna study whose trials are nested MLflow runs under this step's run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict

import mlflow
from mlflow import MlflowClient

from pipelines import data as data_sources
from pipelines import train as training
from pipelines import tune as tuning
from pipelines.search_space import load_space
from pipelines.params import DataParams, TuneParams
from pipelines.steps.split import reuse_or_run_split, run_name
from tracking import env, runs
from tracking.datasets import load_split
from tracking.features import prepare
from tracking.redact import mask_uri

STEP = "tune"
HOST_TAG, PID_TAG = "fittrack.host", "fittrack.pid"


def default_storage() -> str:
    """An SQLite file beside the tracking store (or in this folder when the store is a server)."""
    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///"):
        folder = os.path.dirname(uri[len("sqlite:///"):]) or "."
        return f"sqlite:///{os.path.join(folder, 'optuna.db')}"
    return "sqlite:///optuna.db"


def default_study(data: str, family: str, split_run_id: str) -> str:
    return f"{data_sources.data_name(data)}-{family}-{split_run_id[:8]}"


#: How an extra worker process finds its study's run: not a parameter of the search.
WORKER_FIELDS = ("parent_run_id", "worker_index")


def run_tune(data_params: DataParams, base: training.TrainConfig, params: TuneParams, split_run_id: str = "",
             verbose: bool = True) -> str:
    """Run a study (or, with `params.parent_run_id`, one extra worker of it); return the step run's id."""
    dataset = data_params.load()
    tuning.check_metric(params.metric, dataset.task)
    family = training.resolve_model(base, dataset.kind)
    space = load_space(params.search_space or None, family)
    tuning.check_space(space, base, dataset.task, dataset.kind)
    tuning.make_sampler(params.sampler, data_params.seed)
    params.storage = params.storage or env.FITTRACK_OPTUNA_STORAGE.get() or default_storage()
    if params.parent_run_id:
        return _worker(data_params, base, params, space, split_run_id, params.parent_run_id, params.worker_index)
    with runs.step_run(STEP, run_name=run_name(STEP, data_params.data)) as run:
        run_id, experiment_id = run.info.run_id, run.info.experiment_id
        if not split_run_id:
            # A split made here is a run nested under this one: this run keeps the work.
            split_run_id, reused = reuse_or_run_split(data_params, dataset=dataset)
            print(f"fittrack: {'reusing' if reused else 'made'} split run {split_run_id}", file=sys.stderr)
        # One study per split by default: trials judged on another split's validation rows never compete.
        params.study = params.study or default_study(data_params.data, family, split_run_id)
        storage = tuning.make_storage(params.storage, params.heartbeat_interval, params.grace_period,
                                      tuning.stale_trial_callback(params.max_retries))
        # The trials' own epochs and patience are trial_epochs and trial_patience.
        runs.log_params({**asdict(data_params),
                         **{k: v for k, v in base.params().items() if k not in ("monitor", "epochs", "patience")},
                         **{k: v for k, v in asdict(params).items() if k not in ("storage", *WORKER_FIELDS)},
                         "storage": mask_uri(params.storage), "split_run_id": split_run_id})
        # Tags as well as params: `mlflow run` logs its -P values (study '', storage '') before we start,
        # and a param cannot change, so these say where the study lives whatever the params say.
        mlflow.set_tags({"optuna.study_name": params.study, "optuna.storage": mask_uri(params.storage),
                         "fittrack.split_run_id": split_run_id, HOST_TAG: socket.gethostname(),
                         PID_TAG: str(os.getpid())})
        print(f"fittrack: study '{params.study}' in {mask_uri(params.storage)}", file=sys.stderr)
        _end_orphaned_tune_runs(params.study, run_id, experiment_id)
        study = _study(params, storage, data_params.seed)
        # skip_if_exists: a study carried on (main again on the same split) holds this trial already.
        study.enqueue_trial(tuning.default_trial(space, base), skip_if_exists=True)
        children = [_start_worker(i, run_id, split_run_id, data_params, base, params)
                    for i in range(1, params.workers)]
        with training.temp_workdir() as workdir:
            objective = _objective(params, base, space, split_run_id, run_id, experiment_id, workdir)
            # Optuna's bar redraws itself with carriage returns: on a terminal; in a log, a line per trial.
            _optimize(study, objective, params, show_progress=verbose and sys.stderr.isatty(),
                      trial_lines=verbose and not sys.stderr.isatty())
            for child in children:
                if child.wait() != 0:
                    print(f"fittrack: worker pid {child.pid} ended with status {child.returncode}", file=sys.stderr)
            _settle(study, objective, params)
        from pipelines.tune_report import report

        report(study, params, objective.prepared, run_id)
        _log_disk_use(run_id, experiment_id)
        return run_id


#: The tune run's own artifacts plus those of every trial run under it: the study's disk use.
STUDY_ARTIFACT_BYTES = "study_artifact_bytes"


def _log_disk_use(run_id: str, experiment_id: str) -> None:
    """`artifact_bytes` of the tune run (its report, plots and best model's network), and
    `study_artifact_bytes`: that plus every trial run's under it, whatever their end (a completed
    trial's own `artifact_bytes`, logged once its artifacts were written; a failed or pruned trial,
    which logged none, counted from its listing)."""
    client = MlflowClient()
    own = runs.log_artifact_bytes(run_id, client)
    trials = client.search_runs([experiment_id], max_results=50000, filter_string=(
        f"tags.`mlflow.parentRunId` = '{run_id}' and tags.`{runs.STEP_TAG}` = '{tuning.TRIAL_STEP}'"))
    total = own + sum(trial.data.metrics.get(runs.ARTIFACT_BYTES) or runs.artifact_bytes(trial.info.run_id, client)
                      for trial in trials)
    client.log_metric(run_id, STUDY_ARTIFACT_BYTES, total)


def _end_orphaned_tune_runs(study: str, current_run_id: str, experiment_id: str) -> None:
    """A tune process killed outright cannot end its own run: when the study is resumed on the
    same machine, end the earlier runs whose process is gone (never those of other machines)."""
    stale = MlflowClient().search_runs(
        [experiment_id],
        filter_string=(f"tags.`{runs.STEP_TAG}` = '{STEP}' and tags.`optuna.study_name` = '{study}' "
                       f"and attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{socket.gethostname()}'"),
    )
    for run in stale:
        pid = int(run.data.tags.get(PID_TAG, "0") or 0)
        if run.info.run_id != current_run_id and pid and not _alive(pid):
            runs.fail_run(run.info.run_id, f"the tune process (pid {pid}) stopped without ending its run")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _worker(data_params, base, params, space, split_run_id, parent_run_id, worker_index) -> str:
    """An extra local worker: joins the study and adds trials under the same parent run."""
    _end_with_parent()
    storage = tuning.make_storage(params.storage, params.heartbeat_interval, params.grace_period,
                                  tuning.stale_trial_callback(params.max_retries))
    study = _study(params, storage, data_params.seed + worker_index)
    experiment_id = MlflowClient().get_run(parent_run_id).info.experiment_id
    with training.temp_workdir() as workdir:
        objective = _objective(params, base, space, split_run_id, parent_run_id, experiment_id, workdir)
        _optimize(study, objective, params, show_progress=False)
    return parent_run_id


def _end_with_parent(interval: float = 1.0) -> None:
    """A worker whose tune process died (SIGKILL) must not train on unsupervised: when the parent
    is gone, interrupt the main thread, so Optuna fails the running trial and its run ends KILLED."""
    import _thread
    import threading

    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(interval)
        print(f"fittrack: tune process {parent} is gone; this worker stops", file=sys.stderr)
        _thread.interrupt_main()

    threading.Thread(target=watch, name="fittrack-parent-watch", daemon=True).start()


def _study(params: TuneParams, storage, seed: int):
    import optuna

    return optuna.create_study(
        study_name=params.study, storage=storage, load_if_exists=True,
        direction=tuning.direction_for(params.metric, params.direction),
        sampler=tuning.make_sampler(params.sampler, seed), pruner=tuning.make_pruner(params.pruner, params.trial_epochs),
    )


def _objective(params, base, space, split_run_id, parent_run_id, experiment_id, workdir) -> tuning.Objective:
    """The split as the network sees it, and the trials' fixed settings, for this process's trials."""
    data = load_split(split_run_id)
    # Trials skip TensorBoard: the run's own epoch metrics already hold the curves.
    base = training.TrainConfig(**{**base.params(), "epochs": params.trial_epochs, "tensorboard": False})
    return tuning.Objective(base, space, prepare(data), params.metric, parent_run_id, experiment_id,
                            params.study, split_run_id, data.kind, workdir)


def _optimize(study, objective, params, show_progress, trial_lines=False):
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    if _finished(study) >= params.n_trials:
        return
    # Finished trials (complete or pruned) count towards n_trials, whichever worker ran them.
    done = MaxTrialsCallback(params.n_trials, states=(TrialState.COMPLETE, TrialState.PRUNED))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # catch: a trial that raises is failed (its run FAILED with the reason) and the study goes on.
    study.optimize(objective, n_trials=params.n_trials, timeout=params.timeout or None,
                   callbacks=[done, tuning.retry_failed_callback(params.max_retries),
                              *([_trial_printer(params.metric)] if trial_lines else [])],
                   catch=(Exception,), show_progress_bar=show_progress)


def _trial_printer(metric: str):
    """One line per finished trial, for a log: what Optuna's progress bar shows on a terminal."""
    from optuna.trial import TrialState

    def print_trial(study, trial) -> None:
        line = f"fittrack: trial {trial.number} {trial.state.name.lower()}"
        if trial.state == TrialState.COMPLETE:
            best = study.best_trial
            line += f": {metric} {trial.value:.4g} (best {best.value:.4g}, trial {best.number})"
        elif trial.state == TrialState.PRUNED and trial.last_step is not None:
            # The last step reported is the epoch's number it was judged at (tracking.epochs).
            line += f" at epoch {trial.last_step}: {metric} {trial.intermediate_values[trial.last_step]:.4g}"
        print(line, file=sys.stderr, flush=True)

    return print_trial


def _settle(study, objective, params):
    """After the local workers end: fail what a dead worker left RUNNING, then make up the count."""
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    deadline = time.monotonic() + 2 * params.grace_period
    while study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) and time.monotonic() < deadline:
        time.sleep(params.heartbeat_interval)
        fail_stale_trials(study)
    _optimize(study, objective, params, show_progress=False)


def _finished(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _start_worker(index: int, parent_run_id: str, split_run_id: str, data_params: DataParams,
                  base: training.TrainConfig, params: TuneParams) -> subprocess.Popen:
    """This study again, in a process of its own, adding trials under the same parent run."""
    trial_config = {k: v for k, v in base.params().items() if k not in ("seed", "monitor", "epochs", "patience")}
    options = {**asdict(data_params), **trial_config, **asdict(params), "workers": 1, "parent_run_id": parent_run_id,
               "worker_index": index, "split_run_id": split_run_id}
    command = [sys.executable, "-m", "pipelines.cli", "tune", "--quiet"]
    for key, value in options.items():
        if key != "storage":
            command += [f"--{key.replace('_', '-')}", runs.param_string(value)]
    # Not the parent's MLFLOW_RUN_ID: the worker must not join (and end) the parent run. The storage
    # URL goes through the environment: a command line (and any password in it) is world-readable.
    worker_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}
    worker_env[env.FITTRACK_OPTUNA_STORAGE.name] = params.storage
    return subprocess.Popen(command, env=worker_env, stdout=subprocess.DEVNULL)
