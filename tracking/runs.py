"""Opening, joining, failing and finding MLflow runs for fittrack's steps."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import pathlib

import mlflow
from mlflow import MlflowClient

from tracking.errors import FittrackError
from tracking import entry, env

STEP_TAG = "fittrack.step"
CODE_VERSION_TAG = "fittrack.code_version"
DATA_DIGEST_TAG = "fittrack.data_digest"
ERROR_TAG = "error"
#: What kind of experiment this is, as MLflow 3's UI names kinds: `custom_model_development` is its
#: "Machine learning". MLflow 3.17.2's UI shows the kind but still opens an experiment by its sidebar's
#: GenAI | Model training switch (tests/test_ui.py checks both).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

_PACKAGES = ("pipelines", "tracking")


@functools.cache
def code_version() -> str:
    """A digest of fittrack's own source, so reuse notices uncommitted changes too. Read once per
    process: it is the code the process imported, and every step run and trial is tagged with it."""
    root = pathlib.Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for package in _PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


@contextlib.contextmanager
def step_run(step: str, run_id: str | None = None, run_name: str | None = None, tags: dict | None = None,
             nested: bool = False):
    """Open the run for a step: the one `mlflow run` made for this process, if any (or `run_id`).

    With `nested`, a new run under the active one: a step that another step needs first (a
    split, baselines) goes there, so the entry point's own run keeps its work.
    A FittrackError ends the run FAILED with the message in its `error` tag; so does any
    other exception (then with its type); Ctrl-C ends it KILLED.
    """
    parent = mlflow.active_run() if nested else None
    if parent is not None:
        # An explicit new id: start_run() without one would join a leftover MLFLOW_RUN_ID.
        run_id = MlflowClient().create_run(parent.info.experiment_id, run_name=run_name, tags={
            "mlflow.parentRunId": parent.info.run_id}).info.run_id
    elif run_id is None:
        run_id = entry.join()
    run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name, nested=parent is not None)
    if run_name:
        tags = {"mlflow.runName": run_name, **(tags or {})}
    mlflow.set_tags({STEP_TAG: step, CODE_VERSION_TAG: code_version(), **(tags or {})})
    if parent is None:
        mark_experiment(run.info.experiment_id)
    try:
        yield run
    except KeyboardInterrupt:
        _end(ERROR_TAG, "interrupted", "KILLED")
        raise
    except FittrackError as exc:
        _end(ERROR_TAG, str(exc), "FAILED")
        raise
    except BaseException as exc:
        _end(ERROR_TAG, f"{type(exc).__name__}: {exc}".splitlines()[0][:5000], "FAILED")
        raise
    else:
        mlflow.flush_async_logging()
        mlflow.end_run("FINISHED")


def mark_experiment(experiment_id: str, client: MlflowClient | None = None) -> None:
    """Tag the experiment as machine learning (EXPERIMENT_KIND_TAG) unless it says what it is already."""
    client = client or MlflowClient()
    if EXPERIMENT_KIND_TAG not in client.get_experiment(experiment_id).tags:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)


def _end(key: str, value: str, status: str) -> None:
    try:
        mlflow.flush_async_logging()
    except Exception:  # the run must still be closed if the queue is broken
        pass
    try:
        mlflow.set_tag(key, value)
        mlflow.end_run(status)
    except Exception as exc:
        from tracking import outage

        # A store that stopped answering cannot record the failure; the error raised says why.
        if not outage.is_unreachable(exc):
            raise


def log_params(params: dict) -> None:
    """Log params into the active run, leaving alone those `mlflow run` already logged
    (it records -P values as typed, e.g. '1e-3', and MLflow refuses a changed value)."""
    run = mlflow.active_run()
    existing = MlflowClient().get_run(run.info.run_id).data.params
    fresh = {k: param_string(v) for k, v in params.items() if k not in existing}
    if fresh:
        mlflow.log_params(fresh)


def param_string(value) -> str:
    """A param or command-line value as MLflow and click read it back (booleans as true/false)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def fail_run(run_id: str, message: str) -> None:
    """Mark a run that is still RUNNING as FAILED with the reason (used for errors raised
    before or outside `step_run`, e.g. a bad command-line value under `mlflow run`)."""
    client = MlflowClient()
    try:
        run = client.get_run(run_id)
    except Exception:
        return
    if run.info.status == "RUNNING":
        client.set_tag(run_id, ERROR_TAG, message)
        client.set_terminated(run_id, "FAILED")


def find_finished_run(step: str, params: dict, tags: dict, experiment_id: str | None = None):
    """The newest FINISHED run of `step` whose params and tags all match, or None.

    This is the reuse check of MLflow's multistep example, with our own code version
    and data digest in place of the git commit.
    """
    experiment_id = experiment_id or _current_experiment_id()
    clauses = [f"tags.`{STEP_TAG}` = '{step}'", "attributes.status = 'FINISHED'"]
    clauses += [f"params.`{k}` = '{_quote(v)}'" for k, v in params.items()]
    clauses += [f"tags.`{k}` = '{_quote(v)}'" for k, v in tags.items()]
    runs = MlflowClient().search_runs(
        [experiment_id], filter_string=" and ".join(clauses), order_by=["attributes.start_time DESC"], max_results=1
    )
    return runs[0] if runs else None


def _quote(value) -> str:
    return str(value).replace("'", "\\'")


def _current_experiment_id() -> str:
    active = mlflow.active_run()
    if active is not None:
        return active.info.experiment_id
    return env.MLFLOW_EXPERIMENT_ID.get() or mlflow.tracking.fluent._get_experiment_id()


#: The run's artifacts' size: exact bytes, so that it equals the sum of its listing's file sizes and adds
#: up over a study's runs without rounding (a float metric holds whole numbers exactly up to 2**53).
ARTIFACT_BYTES = "artifact_bytes"


def artifact_bytes(run_id: str, client: MlflowClient | None = None) -> int:
    """Bytes of every file in run `run_id`'s artifact listing, its folders walked. A model logged with
    MLflow 3's `log_model(name=...)` (the pyfunc `model`) is a LoggedModel stored beside the run, not
    in this listing; `network` and the checkpoints are in it."""
    client = client or MlflowClient()
    total, folders = 0, [None]
    while folders:
        for info in client.list_artifacts(run_id, folders.pop()):
            if info.is_dir:
                folders.append(info.path)
            else:
                total += info.file_size or 0
    return total


def log_artifact_bytes(run_id: str, client: MlflowClient | None = None) -> int:
    """Log `artifact_bytes` (its artifacts as they are now) into run `run_id`; return it."""
    client = client or MlflowClient()
    size = artifact_bytes(run_id, client)
    client.log_metric(run_id, ARTIFACT_BYTES, size)
    return size
