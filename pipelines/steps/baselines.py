"""The baselines step: scikit-learn models fitted on a split, the bar every Keras run is judged by.

One `baselines` run per split (reused while the split and the code are the same), with each
baseline as a run nested under it, so the MLflow UI compares them with the Keras runs by the same
metric names (`val_accuracy`, `test_accuracy`, ...).
"""

from __future__ import annotations

import mlflow
from mlflow import MlflowClient

from pipelines import baselines as baseline_models
from pipelines.metrics import METRIC_AVERAGING_TAG, averaging
from tracking import runs
from tracking.datasets import SplitData, load_split
from tracking.features import Prepared, prepare
from tracking.metric_names import PRIMARY_METRIC

STEP = "baselines"


def run_baselines(split_run_id: str, seed: int, nested: bool = False, data: SplitData | None = None,
                  prepared: Prepared | None = None) -> str:
    """Fit and log the baselines of a split; return the baselines run's id. `nested`: a new run
    under the active one. `data` and `prepared`: the split and its features as the caller (the
    train step) already holds them; loaded and prepared here when not given."""
    from pipelines.steps.split import run_name

    if data is None:
        data = load_split(split_run_id)
    with runs.step_run(STEP, run_name=run_name(STEP, data.source), nested=nested) as run:
        runs.log_params({"split_run_id": split_run_id, "seed": seed})
        mlflow.set_tags({"fittrack.split_run_id": split_run_id, runs.DATA_DIGEST_TAG: data.digest})
        if prepared is None:
            prepared = prepare(data)
        fitted = baseline_models.fit_baselines(data, prepared, seed)
        for baseline in fitted:
            _log_baseline(run, baseline, split_run_id, data, prepared)
        metric = PRIMARY_METRIC[data.task]
        # The best baseline is chosen on validation, as a Keras run is; its test score is the bar.
        best = max(fitted, key=lambda b: b.metrics[f"val_{metric}"])
        mlflow.log_metrics({f"best_val_{metric}": best.metrics[f"val_{metric}"],
                            f"best_test_{metric}": best.metrics[f"test_{metric}"],
                            **{f"{b.name}_test_{metric}": b.metrics[f"test_{metric}"] for b in fitted}})
        mlflow.set_tag("best_baseline", best.name)
        return run.info.run_id


def _log_baseline(parent, baseline, split_run_id: str, data: SplitData, prepared: Prepared) -> None:
    """One baseline as a run nested under `parent`: params, scores and its model (runs:/<id>/model)."""
    from pipelines.steps.train import pip_requirements
    from tracking.models import input_example, log_estimator

    # An explicit new id: start_run() without one would join a leftover MLFLOW_RUN_ID.
    created = MlflowClient().create_run(parent.info.experiment_id, run_name=f"baseline-{baseline.name}", tags={
        "mlflow.parentRunId": parent.info.run_id, runs.STEP_TAG: "baseline",
        "fittrack.split_run_id": split_run_id, runs.DATA_DIGEST_TAG: data.digest,
        METRIC_AVERAGING_TAG: averaging(data.task, data.classes)})
    with mlflow.start_run(run_id=created.info.run_id, nested=True):
        mlflow.log_params({"model": baseline.estimator, "baseline": baseline.name, "split_run_id": split_run_id,
                           "encoding": baseline.meta["encoding"], **baseline.params})
        mlflow.log_metrics({k: float(v) for k, v in {**baseline.metrics, **baseline.fit_metrics}.items()})
        preprocessor = prepared.preprocessor if baseline.meta["encoding"] == "network" else None
        model_uri = log_estimator(baseline.model, baseline.meta, preprocessor, input_example(prepared.raw_train_x),
                                  pip_requirements())
        mlflow.set_tag("fittrack.model_uri", model_uri)


def find_baselines(split_run_id: str, seed: int):
    return runs.find_finished_run(STEP, {"split_run_id": split_run_id, "seed": seed},
                                  {runs.CODE_VERSION_TAG: runs.code_version()})


def reuse_or_run_baselines(split_run_id: str, seed: int, data: SplitData | None = None,
                           prepared: Prepared | None = None) -> tuple[str, bool]:
    """Return (baselines run id, reused?); new baselines are a run nested under the caller's active
    run, fitted on `data` and `prepared` when given."""
    found = find_baselines(split_run_id, seed)
    if found is not None:
        return found.info.run_id, True
    return run_baselines(split_run_id, seed, nested=True, data=data, prepared=prepared), False


def best_baseline(baselines_run_id: str, task: str) -> tuple[str, str, float]:
    """(name, metric, test score) of the best baseline of a baselines run."""
    run = MlflowClient().get_run(baselines_run_id)
    metric = PRIMARY_METRIC[task]
    return run.data.tags["best_baseline"], metric, run.data.metrics[f"best_test_{metric}"]
