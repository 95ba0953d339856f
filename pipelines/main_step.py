"""`main`: split, then train, each a step run under this one, chained with `mlflow.run`."""

from __future__ import annotations

import os
import sys
from dataclasses import asdict

import mlflow
from mlflow import MlflowClient

from pipelines.errors import FittrackError
from pipelines.split_step import DataParams, find_split
from pipelines.train import TrainConfig
from tracking import env, runs

STEP = "main"
ENV_MANAGERS = ("auto", "local", "virtualenv", "uv", "conda")


def detect_env_manager() -> str:
    """The env manager `mlflow run` used for this process, so nested steps use the same.

    MLflow passes no hint of it to the entry point; the environment it activated tells.
    """
    if os.environ.get("CONDA_DEFAULT_ENV", "").startswith("mlflow-"):
        return "conda"
    prefix = sys.prefix.replace(os.sep, "/")
    if "/.mlflow/envs/" in prefix or "/mlflow/envs/" in prefix:
        return "uv" if os.environ.get("UV") else "virtualenv"
    return "local"


def project_uri() -> str:
    explicit = env.FITTRACK_PROJECT_URI.get()
    if explicit:
        return explicit
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return root if os.path.exists(os.path.join(root, "MLproject")) else os.getcwd()


def run_main(data_params: DataParams, config: TrainConfig, env_manager: str = "auto") -> dict:
    if env_manager not in ENV_MANAGERS:
        raise FittrackError(f"unknown env_manager '{env_manager}'; choose one of {', '.join(ENV_MANAGERS)}")
    config.validate()
    data_params.split_config.validate()
    manager = detect_env_manager() if env_manager == "auto" else env_manager
    uri = project_uri()
    with runs.step_run(STEP, run_name="main") as run:
        runs.log_params({**asdict(data_params), **config.params(), "resolved_env_manager": manager})
        found = find_split(data_params)
        if found is not None:
            split_run_id = found.info.run_id
            print(f"fittrack: reusing split run {split_run_id}", file=sys.stderr)
        else:
            split_run_id = _run_step(uri, "split", _as_strings(asdict(data_params)), manager, run)
        mlflow.set_tag("fittrack.split_run_id", split_run_id)
        train_params = {**_as_strings(asdict(data_params)), **_as_strings(config.params()),
                        "split_run_id": split_run_id}
        train_run_id = _run_step(uri, "train", train_params, manager, run)
        mlflow.set_tag("fittrack.train_run_id", train_run_id)
        trained = MlflowClient().get_run(train_run_id)
        mlflow.log_metrics({k: v for k, v in trained.data.metrics.items() if k.startswith(("test_", "baseline_"))})
        mlflow.set_tag("diagnosis", trained.data.tags.get("diagnosis", ""))
        return {"split_run_id": split_run_id, "train_run_id": train_run_id}


def _run_step(uri: str, entry_point: str, parameters: dict, env_manager: str, parent) -> str:
    from mlflow.exceptions import ExecutionException

    try:
        submitted = mlflow.projects.run(
            uri, entry_point=entry_point, parameters=parameters, env_manager=env_manager,
            experiment_id=parent.info.experiment_id, synchronous=True,
        )
    except ExecutionException as exc:
        raise FittrackError(f"step '{entry_point}' failed: {_child_error(parent, entry_point) or exc}") from exc
    return submitted.run_id


def _child_error(parent, entry_point: str) -> str | None:
    children = MlflowClient().search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and tags.`{runs.STEP_TAG}` = '{entry_point}'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    return children[0].data.tags.get(runs.ERROR_TAG) if children else None


def _as_strings(params: dict) -> dict:
    return {k: runs.param_string(v) for k, v in params.items()}
