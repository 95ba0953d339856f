"""The train step as an MLflow run: params, every epoch, best checkpoint, test, baseline margin, model."""

from __future__ import annotations

import os
import sys
from dataclasses import asdict
from importlib import metadata

import mlflow

from pipelines import fit as fitting
from pipelines import train as training
from pipelines import transfer as transfers
from pipelines.steps.baselines import best_baseline, reuse_or_run_baselines
from pipelines.device import configure_device
from pipelines.errors import FittrackError
from pipelines.evaluate import evaluate_and_log_test
from pipelines.models import ema_momentum
from pipelines.params import DataParams, StepParams
from pipelines.steps.split import reuse_or_run_split, run_name
from pipelines.tracked_fit import fit_tracked
from tracking import entry, outage, runs, system_metrics
from tracking.metric_names import PRIMARY_METRIC
from tracking.datasets import CONTEXTS, dataset_inputs, load_split
from tracking.features import feature_params, prepare

STEP = "train"
#: Where a train run keeps its last epoch (BackupAndRestore) until it has finished.
RESUME_DIR = os.path.join(".fittrack", "resume")
_REQUIREMENTS = ("mlflow", "keras", "tensorflow-cpu", "scikit-learn", "pandas", "numpy")


def run_train(data_params: DataParams, config: training.TrainConfig, split_run_id: str | None = None,
              run_id: str | None = None, verbose: int | None = None,
              transfer: transfers.TransferConfig | None = None, outage_timeout: float = StepParams.outage_timeout,
              tags: dict | None = None) -> str:
    """Train and track one model (from `transfer.init_model` when given); return the train run's id.

    Against a tracking server, requests are retried for `outage_timeout` seconds while training
    goes on; past that the run stops with the model and checkpoints kept on local disk. `tags` are
    set on the run as it opens (e.g. `fittrack.reproduces`)."""
    outage.ride_out(outage_timeout)
    # Before any run opens: an unknown model, alias or run must not leave a split run behind.
    init = transfers.resolve(transfer)
    if run_id:
        # Going on with a run means going on with its split, whatever a new split would be now.
        split_run_id = split_run_id or _check_resumable(run_id, started_by_mlflow_run=bool(entry.run_id()))
    dataset = None
    if not split_run_id:
        # Check what depends on the data before any run opens for a doomed training run.
        dataset = data_params.load()
        config.check_task(dataset.task)
        training.resolve_model(config, dataset.kind)
    with runs.step_run(STEP, run_id=run_id, run_name=run_name(STEP, data_params.data), tags=tags) as run, \
            system_metrics.monitor(run.info.run_id, config.system_metrics, config.system_metrics_interval):
        run_id = run.info.run_id
        if not split_run_id:
            # A split made here is a run nested under this one: this run keeps the work.
            split_run_id, reused = reuse_or_run_split(data_params, dataset=dataset)
            print(f"fittrack: {'reusing' if reused else 'made'} split run {split_run_id}", file=sys.stderr)
        mlflow.set_tag("fittrack.split_run_id", split_run_id)
        # The split is read and its features prepared once here; the baselines take both.
        data = load_split(split_run_id)
        config.check_task(data.task)
        config.resolved_model = training.resolve_model(config, data.kind)
        device = configure_device(config)
        prepared = prepare(data)
        n_train = len(prepared.labels["train"])
        if config.batch_size > n_train:
            # Keras would run one short batch per epoch while the param said otherwise.
            raise FittrackError(f"batch_size {config.batch_size} is above the {n_train} training rows of split "
                                f"{split_run_id}; use a batch size of at most {n_train}")
        baselines_run_id, reused = reuse_or_run_baselines(split_run_id, config.seed, data=data, prepared=prepared)
        print(f"fittrack: {'reusing' if reused else 'made'} baselines run {baselines_run_id}", file=sys.stderr)
        iterations = fitting.iterations_per_epoch(n_train, config.batch_size)
        runs.log_params({
            **config.params(), **asdict(data_params), "split_run_id": split_run_id,
            "resolved_model": config.resolved_model, **feature_params(prepared.meta),
            "iterations_per_epoch": iterations, "ema_momentum": ema_momentum(config, iterations),
            **{f"{name}_size": size for name, size in data.sizes.items()},
            **(init.params(config.learning_rate) if init else {}),
        })
        mlflow.set_tags({runs.DATA_DIGEST_TAG: data.digest, "fittrack.task": data.task, "fittrack.device": device})
        for name, ds in dataset_inputs(data).items():
            mlflow.log_input(ds, context=CONTEXTS[name])
        if init:
            mlflow.set_tags(init.tags())
            init.load(prepared.features["train"].shape[1:])
        result = _fit_and_log(config, prepared, run_id, verbose, init)
        runs.log_artifact_bytes(run_id)  # every artifact is written: checkpoints, plots, tensorboard, network
        _log_baselines(baselines_run_id, data, result)
        _print_summary(run_id, result)
    return run_id


def _check_resumable(run_id: str, started_by_mlflow_run: bool = False) -> str | None:
    """The split run a train run to resume trained on (None if it died before choosing one).
    `mlflow run --run-id` reopened the run already, so its state is not checked then."""
    from mlflow import MlflowClient

    try:
        run = MlflowClient().get_run(run_id)
    except Exception:
        raise FittrackError(f"run {run_id!r} not found in the tracking store") from None
    if not started_by_mlflow_run:
        if run.data.tags.get(runs.STEP_TAG) != STEP:
            raise FittrackError(f"run {run_id!r} is not a train run; only a train run can be resumed")
        if run.info.status == "FINISHED":
            raise FittrackError(f"run {run_id!r} already finished; resume a run that crashed or was killed")
    return run.data.tags.get("fittrack.split_run_id")


def _fit_and_log(config, prepared, run_id, verbose, transfer=None):
    task = prepared.meta["task"]
    with training.temp_workdir() as workdir:
        outcome = None
        try:
            # A transfer run is several Keras fits, which BackupAndRestore does not follow.
            resume_dir = None if transfer else os.path.abspath(os.path.join(RESUME_DIR, run_id))
            outcome = fit_tracked(config, prepared, run_id, workdir, verbose, transfer=transfer,
                                  resume_dir=resume_dir)
            return _evaluate_and_log(outcome, prepared, workdir, task)
        except Exception as exc:
            if not outage.is_unreachable(exc):
                raise
            outage.give_up()
            model = outcome.model if outcome else getattr(exc, "model", None)
            kept = outage.keep_locally(run_id, workdir, model)
            raise outage.TrackingServerUnavailable(
                f"tracking server {mlflow.get_tracking_uri()} did not answer within the outage timeout; "
                f"the model and checkpoints of run {run_id} are kept in {kept}") from None


def _evaluate_and_log(outcome, prepared, workdir, task) -> dict:
    from tracking import plots as run_plots

    # The test_* metrics, and evaluation/: per-class metrics, curves, worst rows (tracking.evaluation).
    test_metrics, predicted = evaluate_and_log_test(outcome.model, prepared)
    plots = run_plots.save_plots(outcome.history, PRIMARY_METRIC[task], task, prepared.labels["test"],
                                 predicted, prepared.meta["classes"], os.path.join(workdir, "plots"))
    for path in plots:
        mlflow.log_artifact(path, "plots")
    tensorboard_dir = os.path.join(workdir, "tensorboard")
    if os.path.isdir(tensorboard_dir):
        mlflow.log_artifacts(tensorboard_dir, "tensorboard")
    model_uri = log_trained_model(outcome.model, prepared)
    return {"test": test_metrics, "diagnosis": outcome.diagnosis, "model_uri": model_uri, "task": task}


def log_trained_model(model, prepared) -> str:
    """Log `network` and `model` into the active run; return the model's URI."""
    from tracking.models import input_example, log_model

    model_uri = log_model(model, prepared.meta, prepared.preprocessor, input_example(prepared.raw_train_x),
                          pip_requirements())
    mlflow.set_tag("fittrack.model_uri", model_uri)
    return model_uri


def _log_baselines(baselines_run_id, data, result):
    """The Keras run carries the best baseline's test score and its margin over it."""
    name, metric, baseline_score = best_baseline(baselines_run_id, data.task)
    keras_score = result["test"].get(f"test_{metric}")
    mlflow.log_metrics({f"baseline_test_{metric}": baseline_score,
                        f"test_{metric}_margin": (keras_score - baseline_score) if keras_score is not None else 0.0})
    mlflow.set_tags({"fittrack.best_baseline": name, "fittrack.baselines_run_id": baselines_run_id})
    result["baseline"] = (name, metric, baseline_score)


def pip_requirements() -> list[str]:
    out = []
    for name in _REQUIREMENTS:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return out


def _print_summary(run_id: str, result: dict) -> None:
    lines = [f"fittrack: train run {run_id} finished"]
    lines += [f"  {k:<28} {v:.4f}" for k, v in sorted(result["test"].items())]
    if "baseline" in result:
        name, metric, score = result["baseline"]
        lines.append(f"  baseline ({name}) test_{metric:<14} {score:.4f}")
    lines.append(f"  diagnosis {result['diagnosis'].label}: {result['diagnosis'].reason}")
    lines.append(f"  model: {result['model_uri']}  (runs:/{run_id}/model)")
    print("\n".join(lines))
