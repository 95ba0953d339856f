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
        # Baselines see what the network sees; pixels scaled to [0, 1] as the network's first layer does.
        features = {n: f / prepared.image_scale if data.kind == "image" else f for n, f in prepared.features.items()}
        fitted = baseline_models.fit_baselines(data.task, features, prepared.labels, seed)
        client = MlflowClient()
        for baseline in fitted:
            created = client.create_run(run.info.experiment_id, run_name=f"baseline-{baseline.name}", tags={
                "mlflow.parentRunId": run.info.run_id, runs.STEP_TAG: "baseline",
                "fittrack.split_run_id": split_run_id, runs.DATA_DIGEST_TAG: data.digest,
                METRIC_AVERAGING_TAG: averaging(data.task, data.classes)})
            for key, value in {"model": baseline.estimator, "baseline": baseline.name,
                               "split_run_id": split_run_id}.items():
                client.log_param(created.info.run_id, key, value)
            for key, value in baseline.metrics.items():
                client.log_metric(created.info.run_id, key, float(value))
            client.set_terminated(created.info.run_id, "FINISHED")
        metric = PRIMARY_METRIC[data.task]
        # The best baseline is chosen on validation, as a Keras run is; its test score is the bar.
        best = max(fitted, key=lambda b: b.metrics[f"val_{metric}"])
        mlflow.log_metrics({f"best_val_{metric}": best.metrics[f"val_{metric}"],
                            f"best_test_{metric}": best.metrics[f"test_{metric}"],
                            **{f"{b.name}_test_{metric}": b.metrics[f"test_{metric}"] for b in fitted}})
        mlflow.set_tag("best_baseline", best.name)
        return run.info.run_id


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
