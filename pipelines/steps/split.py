"""The split step as an MLflow run, and the reuse of a finished one."""

from __future__ import annotations

from dataclasses import asdict

import mlflow

from pipelines import data as data_sources
from pipelines.params import DataParams
from pipelines.split import split
from tracking import runs
from tracking.datasets import SplitData, log_split

STEP = "split"


def run_split(params: DataParams, nested: bool = False, dataset: data_sources.Dataset | None = None) -> str:
    """Load (unless the caller has `dataset` already), split and log; return the split run's id.
    `nested`: a new run under the active one."""
    with runs.step_run(STEP, run_name=run_name(STEP, params.data), nested=nested) as run:
        runs.log_params(asdict(params))
        dataset = dataset or params.load()
        mlflow.set_tags({runs.DATA_DIGEST_TAG: dataset.digest, "fittrack.task": dataset.task})
        parts = split(params.split_config, dataset)
        classes = sorted(set(dataset.y.tolist())) if dataset.task == "classification" else []
        result = SplitData(
            parts=parts, target=dataset.target, task=dataset.task, kind=dataset.kind,
            source=dataset.source, digest=dataset.digest, classes=classes, coerced=list(dataset.coerced),
        )
        runs.log_params({f"{name}_size": size for name, size in result.sizes.items()})
        log_split(result)
        return run.info.run_id


def find_split(params: DataParams, dataset: data_sources.Dataset | None = None):
    """A finished split run for the same parameters, data digest and code version, or None.

    `dataset` is the data already loaded by the caller, if it has it."""
    dataset = dataset or params.load()
    return runs.find_finished_run(
        STEP, params.match_params(),
        {runs.DATA_DIGEST_TAG: dataset.digest, runs.CODE_VERSION_TAG: runs.code_version()},
    )


def reuse_or_run_split(params: DataParams, dataset: data_sources.Dataset | None = None) -> tuple[str, bool]:
    """Return (split run id, reused?); a new split is a run nested under the caller's active run."""
    dataset = dataset or params.load()
    found = find_split(params, dataset)
    if found is not None:
        return found.info.run_id, True
    return run_split(params, nested=True, dataset=dataset), False


def run_name(step: str, data: str) -> str:
    """Runs are named after their step and data (`train-digits`), so the UI's list reads."""
    return f"{step}-{data_sources.data_name(data)}"
