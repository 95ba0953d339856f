"""The register step: the best run's model into the MLflow Model Registry, champion/challenger.

The candidate is judged once on the held-out test rows of its own split; the current champion is
judged on the very same rows, and the `champion` alias moves only if the candidate beats it.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import mlflow
import numpy as np
from mlflow import MlflowClient

from pipelines import data as data_sources
from pipelines.errors import FittrackError
from pipelines.models import mode_of
from tracking import env, runs
from tracking.datasets import load_split

STEP = "register"
CHAMPION, CHALLENGER = "champion", "challenger"
# Each version's place in the promotion queue: pending until its register run has decided.
PROMOTION_TAG, PENDING, PROMOTED, KEPT = "fittrack.promotion", "pending", "promoted", "kept"
SCORE = {"classification": "accuracy", "regression": "r2_score"}


@dataclass
class Candidate:
    run: object
    score: float  # its validation score by the chosen metric


def run_register(metric: str = "val_loss", run_id: str = "", study: str = "", experiment: str = "",
                 model_name: str = "") -> dict:
    """Register the best candidate; return what happened (version, scores, promoted?)."""
    client = MlflowClient()
    with runs.step_run(STEP, run_name="register"):
        candidate = _pick(client, metric, run_id, study, experiment)
        source = candidate.run
        split_run_id = source.data.tags.get("fittrack.split_run_id") or source.data.params.get("split_run_id")
        model_uri = source.data.tags.get("fittrack.model_uri")
        if not split_run_id or not model_uri:
            raise FittrackError(f"run {source.info.run_id} has no logged model and split to register")
        data = load_split(split_run_id)
        name = model_name or data_sources.data_name(data.source)
        runs.log_params({"metric": metric, "model_name": name, "source_run_id": source.info.run_id,
                         "split_run_id": split_run_id})
        score_name = f"test_{SCORE[data.task]}"
        challenger_score = _test_score(model_uri, data)
        version = mlflow.register_model(model_uri, name, tags={
            "source_run_id": source.info.run_id, "split_run_id": split_run_id,
            runs.DATA_DIGEST_TAG: data.digest, score_name: f"{challenger_score:.6f}",
            "study": source.data.tags.get("optuna.study_name", ""), f"val_score_{metric}": f"{candidate.score:.6f}",
            PROMOTION_TAG: PENDING, "fittrack.register_run_id": mlflow.active_run().info.run_id,
        })
        _wait_for_earlier_promotions(client, name, int(version.version))
        client.set_registered_model_alias(name, CHALLENGER, version.version)
        champion = _current(client, name)
        champion_score = None
        if champion is not None and champion.version != version.version:
            champion_score = _test_score(f"models:/{name}/{champion.version}", data)
        promoted = champion_score is None or challenger_score > champion_score
        if promoted:
            client.set_registered_model_alias(name, CHAMPION, version.version)
            message = f"version {version.version} is the {CHAMPION} of '{name}' ({score_name} {challenger_score:.4f}"
            message += f", was {champion_score:.4f} for version {champion.version})" if champion_score is not None else ")"
        else:
            message = (f"version {version.version} stays {CHALLENGER} of '{name}': {score_name} "
                       f"{challenger_score:.4f} lost to {CHAMPION} version {champion.version}'s "
                       f"{champion_score:.4f} by {champion_score - challenger_score:.4f} on the same test rows")
        client.set_model_version_tag(name, version.version, PROMOTION_TAG, PROMOTED if promoted else KEPT)
        mlflow.log_metrics({f"challenger_{score_name}": challenger_score,
                            **({f"champion_{score_name}": champion_score} if champion_score is not None else {})})
        mlflow.set_tags({"registered_model": name, "registered_version": version.version,
                         "promoted": str(promoted).lower()})
        print(f"fittrack: {message}", file=sys.stderr)
        return {"name": name, "version": version.version, "promoted": promoted,
                "challenger_score": challenger_score, "champion_score": champion_score}


def _pick(client, metric: str, run_id: str, study: str, experiment: str) -> Candidate:
    if run_id:
        # Several ids (comma-separated): the best of them, as `main` asks of its train and tune runs.
        scored = []
        for one in filter(None, (part.strip() for part in run_id.split(","))):
            try:
                run = client.get_run(one)
            except Exception:
                raise FittrackError(f"run '{one}' not found in the tracking store") from None
            scored.append(Candidate(run, _validation_score(client, run, metric)))
        if not scored:
            raise FittrackError(f"run_id '{run_id}' names no run")
        return (max if mode_of(metric) == "max" else min)(scored, key=lambda c: c.score)
    experiment_ids = [_experiment_id(client, experiment)] if experiment else [runs._current_experiment_id()]
    clause = "attributes.status = 'FINISHED'"
    if study:
        clause += f" and tags.`{runs.STEP_TAG}` = 'tune' and tags.`optuna.study_name` = '{study}'"
    found = client.search_runs(experiment_ids, clause, max_results=5000)
    found = [r for r in found if r.data.tags.get(runs.STEP_TAG) in ("train", "tune")
             and r.data.tags.get("fittrack.model_uri")]
    where = f"study '{study}'" if study else f"experiment '{experiment or experiment_ids[0]}'"
    if not found:
        raise FittrackError(f"{where} has no finished run with a model to register")
    scored = [(r, s) for r in found if (s := _validation_score(client, r, metric, strict=False)) is not None]
    if not scored:
        raise FittrackError(f"no finished run in {where} logged metric '{metric}'")
    best = (max if mode_of(metric) == "max" else min)(scored, key=lambda pair: pair[1])
    return Candidate(*best)


def _validation_score(client, run, metric: str, strict: bool = True):
    """A train run's best epoch by `metric`; a tune run's best trial value when it tuned `metric`."""
    if run.data.tags.get(runs.STEP_TAG) == "tune":
        if run.data.params.get("metric") == metric and "best_value" in run.data.metrics:
            return run.data.metrics["best_value"]
    else:
        history = [m.value for m in client.get_metric_history(run.info.run_id, metric)]
        if history:
            return max(history) if mode_of(metric) == "max" else min(history)
    if strict:
        raise FittrackError(f"run {run.info.run_id} has no metric '{metric}'")
    return None


def _experiment_id(client, experiment: str) -> str:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        try:
            found = client.get_experiment(experiment)
        except Exception:
            found = None
    if found is None:
        raise FittrackError(f"experiment '{experiment}' not found")
    return found.experiment_id


def _current(client, name: str):
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except Exception:  # no champion yet
        return None


def _wait_for_earlier_promotions(client, name: str, version: int) -> None:
    """Decide in version order, one register run at a time.

    The registry numbers versions atomically, so the numbers are tickets: a version decides only
    when every lower version has decided. Two runs can then never both beat the same champion and
    race on the alias; each judges the champion the one before it left. A version whose run died
    undecided (SIGKILL) holds the queue for at most FITTRACK_PROMOTION_TIMEOUT seconds.
    """
    deadline = time.monotonic() + env.FITTRACK_PROMOTION_TIMEOUT.get()
    while True:
        waiting = [v.version for v in client.search_model_versions(f"name = '{name}'")
                   if int(v.version) < version and v.tags.get(PROMOTION_TAG) == PENDING
                   and _register_run_alive(client, v.tags.get("fittrack.register_run_id"))]
        if not waiting:
            return
        if time.monotonic() > deadline:
            print(f"fittrack: version(s) {', '.join(map(str, sorted(waiting)))} of '{name}' still undecided; "
                  "deciding without them", file=sys.stderr)
            return
        time.sleep(0.5)


def _register_run_alive(client, run_id: str | None) -> bool:
    if not run_id:
        return False
    try:
        return client.get_run(run_id).info.status == "RUNNING"
    except Exception:
        return False


def _test_score(model_uri: str, data) -> float:
    """The model's score on the split's test rows, as the source had them."""
    from sklearn.metrics import accuracy_score, r2_score

    model = mlflow.pyfunc.load_model(model_uri)
    test = data.parts["test"]
    predicted = np.asarray(model.predict(test.x))
    if data.task == "regression":
        return float(r2_score(test.y, predicted))
    return float(accuracy_score(np.asarray(test.y).astype(str), predicted.astype(str)))

