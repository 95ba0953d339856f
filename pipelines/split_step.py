"""The split step as an MLflow run, and the reuse of a finished one."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import mlflow
from mlflow import MlflowClient

from pipelines import data as data_sources
from pipelines.split import SplitConfig, split
from tracking import runs
from tracking.datasets import SplitData, log_split

STEP = "split"


@dataclass
class DataParams:
    """The parameters every step understands."""

    data: str = "builtin:digits"
    target: str = "target"
    task: str = "auto"
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    seed: int = 42

    @property
    def split_config(self) -> SplitConfig:
        return SplitConfig(val_fraction=self.val_fraction, test_fraction=self.test_fraction, seed=self.seed)

    def match_params(self) -> dict:
        # The path itself is not matched: the data digest says whether the rows are the same.
        return {k: v for k, v in asdict(self).items() if k != "data"}


def run_split(params: DataParams, run_id: str | None = None) -> str:
    """Load, split and log; return the split run's id. `run_id` joins an existing run."""
    params.split_config.validate()
    with runs.step_run(STEP, run_id=run_id, run_name="split") as run:
        runs.log_params(asdict(params))
        dataset = data_sources.load(params.data, params.target, params.task)
        mlflow.set_tags({runs.DATA_DIGEST_TAG: dataset.digest, "fittrack.task": dataset.task})
        parts = split(params.split_config, dataset)
        classes = sorted(set(dataset.y.tolist())) if dataset.task == "classification" else []
        result = SplitData(
            parts=parts, target=dataset.target, task=dataset.task, kind=dataset.kind,
            source=dataset.source, digest=dataset.digest, classes=classes,
        )
        runs.log_params({f"{name}_size": size for name, size in result.sizes.items()})
        log_split(result)
        return run.info.run_id


def find_split(params: DataParams, dataset: data_sources.Dataset | None = None):
    """A finished split run for the same parameters, data digest and code version, or None.

    `dataset` is the data already loaded by the caller, if it has it."""
    dataset = dataset or data_sources.load(params.data, params.target, params.task)
    return runs.find_finished_run(
        STEP, params.match_params(),
        {runs.DATA_DIGEST_TAG: dataset.digest, runs.CODE_VERSION_TAG: runs.code_version()},
    )


def reuse_or_run_split(params: DataParams, experiment_id: str | None = None,
                       dataset: data_sources.Dataset | None = None) -> tuple[str, bool]:
    """Return (split run id, reused?) without touching any run the caller has open."""
    params.split_config.validate()
    found = find_split(params, dataset)
    if found is not None:
        return found.info.run_id, True
    # A fresh run id of our own: plain start_run() would join the caller's MLFLOW_RUN_ID.
    experiment_id = experiment_id or runs._current_experiment_id()
    created = MlflowClient().create_run(experiment_id, run_name="split")
    return run_split(params, run_id=created.info.run_id), False
