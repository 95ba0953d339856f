"""`main`: split, baselines, train, tune, register, each a step run under this one, chained with `mlflow.run`."""

from __future__ import annotations

import os
import sys
from dataclasses import asdict

import mlflow
from mlflow import MlflowClient

from pipelines.steps.baselines import find_baselines
from pipelines.errors import FittrackError
from pipelines.params import DataParams, PipelineParams
from pipelines.steps.register import BASELINE, BASELINE_TAG, KERAS, KIND_TAG
from pipelines.steps.split import find_split, run_name
from pipelines.train import TrainConfig
from tracking import env, runs
from tracking.redact import mask_uri

STEP = "main"


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
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return root if os.path.exists(os.path.join(root, "MLproject")) else os.getcwd()


def run_main(data_params: DataParams, config: TrainConfig, pipeline: PipelineParams | None = None,
             verbose: bool = False) -> dict:
    """`verbose`: passed on to every step (`-P verbose=true`), which then lets TensorFlow's and
    MLflow's start-up lines through (tracking.terminal)."""
    pipeline = pipeline or PipelineParams()
    manager = detect_env_manager() if pipeline.env_manager == "auto" else pipeline.env_manager
    uri = project_uri()
    data_strings = _as_strings(asdict(data_params))
    reused = set()
    with runs.step_run(STEP, run_name=run_name(STEP, data_params.data)) as run:
        runs.log_params({**asdict(data_params), **config.params(), **asdict(pipeline),
                         "resolved_env_manager": manager})
        found = find_split(data_params)
        if found is not None:
            split_run_id = found.info.run_id
            reused.add("split")
            print(f"fittrack: reusing split run {split_run_id}", file=sys.stderr)
        else:
            split_run_id = _run_step(uri, "split", data_strings, manager, run, verbose)
        mlflow.set_tag("fittrack.split_run_id", split_run_id)

        found = find_baselines(split_run_id, data_params.seed)
        if found is not None:
            baselines_run_id = found.info.run_id
            reused.add("baselines")
            print(f"fittrack: reusing baselines run {baselines_run_id}", file=sys.stderr)
        else:
            baselines_run_id = _run_step(uri, "baselines", {"split_run_id": split_run_id,
                                                           "seed": str(data_params.seed)}, manager, run, verbose)
        mlflow.set_tag("fittrack.baselines_run_id", baselines_run_id)

        train_params = {**data_strings, **_as_strings(config.params()), "split_run_id": split_run_id}
        train_run_id = _run_step(uri, "train", train_params, manager, run, verbose)
        mlflow.set_tag("fittrack.train_run_id", train_run_id)
        candidates = [train_run_id]

        if pipeline.tune_trials > 0:
            tune_params = {
                **data_strings, "split_run_id": split_run_id, "n_trials": str(pipeline.tune_trials),
                "timeout": str(pipeline.tune_timeout), "metric": pipeline.metric, "trial_epochs": str(pipeline.tune_epochs),
                # No study: tune's default is one per split, so running main again on it carries the search on.
                **{k: runs.param_string(getattr(config, k)) for k in ("model", "class_weight", "device",
                                                                      "keep_checkpoints", "system_metrics",
                                                                      "system_metrics_interval")},
            }
            tune_run_id = _run_step(uri, "tune", tune_params, manager, run, verbose)
            mlflow.set_tag("fittrack.tune_run_id", tune_run_id)
            candidates.append(tune_run_id)

        register_run_id = _run_step(uri, "register", {
            "metric": pipeline.metric, "run_id": ",".join(candidates), "model_name": pipeline.model_name,
            "include_baselines": runs.param_string(pipeline.include_baselines),
        }, manager, run, verbose)
        return _summarise(split_run_id, baselines_run_id, train_run_id, candidates, register_run_id, reused, run)


def _summarise(split_run_id, baselines_run_id, train_run_id, candidates, register_run_id, reused, run) -> dict:
    """The main run carries the champion's outcome next to the best baseline's, and the margin between."""
    client = MlflowClient()
    registered = client.get_run(register_run_id)
    baselines = client.get_run(baselines_run_id)
    trained = client.get_run(train_run_id)
    name, version = registered.data.tags["registered_model"], registered.data.tags["registered_version"]
    champion = client.get_model_version_by_alias(name, "champion")
    # The champion's score on its own split's test rows, as register recorded it on the version (the
    # comparison itself may have used fewer rows, or none when the champion came from other data).
    key = next(k for k in registered.data.metrics if k.startswith("challenger_test_"))
    score_name = key.removeprefix("challenger_")
    champion_score = float(champion.tags[score_name])
    baseline_score = baselines.data.metrics[f"best_{score_name}"]
    # Bigger is better for every test_ score the summary shows (accuracy, r2_score). The champion's
    # score is read from a tag of 6 decimals: so is the margin (+ 0.0 turns -0.0 into 0.0).
    margin = round(champion_score - baseline_score, 6) + 0.0
    # Versions from before baselines could compete carry no kind: they are Keras models.
    kind = champion.tags.get(KIND_TAG, KERAS)
    described = f"baseline {champion.tags.get(BASELINE_TAG, '')}".strip() if kind == BASELINE else kind
    mlflow.log_metrics({**{k: v for k, v in trained.data.metrics.items() if k.startswith("test_")},
                        f"champion_{score_name}": champion_score, f"baseline_{score_name}": baseline_score,
                        f"champion_margin_{score_name}": margin})
    mlflow.set_tags({"diagnosis": trained.data.tags.get("diagnosis", ""), "registered_model": name,
                     "registered_version": version, "champion_version": str(champion.version),
                     "champion_kind": kind, "best_baseline": baselines.data.tags.get("best_baseline", "")})
    tune_run_id = candidates[1] if len(candidates) > 1 else None
    steps = {"split": split_run_id, "baselines": baselines_run_id, "train": train_run_id, "tune": tune_run_id,
             "register": register_run_id}
    lines = [f"fittrack: main run {run.info.run_id}, its steps:"]
    notes = {**{step: "reused" for step in reused}, "register": f"registered models:/{name}/{version}"}
    lines += [f"  {step:<10} {run_id or '(skipped: tune_trials=0)'}" + (f"  ({notes[step]})" if step in notes else "")
              for step, run_id in steps.items()]
    best_baseline = baselines.data.tags.get("best_baseline")
    lines.append(f"fittrack: champion models:/{name}@champion (version {champion.version}, {described}): {score_name} "
                 f"{champion_score:.4f}; best baseline ({best_baseline}) {baseline_score:.4f}; margin {margin:+.4f}")
    if margin < 0:
        lines.append(f"fittrack: warning: the champion is below the best baseline ({best_baseline}) by {-margin:.4f} "
                     f"{score_name}")
    lines += _viewers(run, client.get_run(tune_run_id) if tune_run_id else None)
    print("\n".join(lines), file=sys.stderr)
    return {"split_run_id": split_run_id, "baselines_run_id": baselines_run_id, "train_run_id": train_run_id,
            "tune_run_id": tune_run_id, "register_run_id": register_run_id,
            "model_name": name, "version": version, "champion_version": str(champion.version)}


def _viewers(run, tune_run) -> list[str]:
    """The commands that show this main run in the MLflow UI and its study in optuna-dashboard."""
    uri = mask_uri(mlflow.get_tracking_uri())
    page = f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    if uri.startswith(("http://", "https://")):
        lines = [f"fittrack: MLflow UI: {uri.rstrip('/')}/{page}"]
    else:
        lines = [f"fittrack: MLflow UI: mlflow ui --backend-store-uri {uri}  then  http://127.0.0.1:5000/{page}"]
    storage = tune_run.data.tags.get("optuna.storage") if tune_run is not None else None
    if storage:
        lines.append(f"fittrack: Optuna: optuna-dashboard {storage}  (study {tune_run.data.tags.get('optuna.study_name')})")
    return lines


def _run_step(uri: str, entry_point: str, parameters: dict, env_manager: str, parent, verbose: bool = False) -> str:
    from mlflow.exceptions import ExecutionException

    parameters = {**parameters, "verbose": runs.param_string(verbose)}
    try:
        submitted = mlflow.projects.run(
            uri, entry_point=entry_point, parameters=parameters, env_manager=env_manager,
            experiment_id=parent.info.experiment_id, synchronous=True,
        )
    except ExecutionException as exc:
        raise FittrackError(f"step {entry_point!r} failed: {_child_error(parent, entry_point) or exc}") from exc
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
