"""The register step: the best run's model into the MLflow Model Registry, champion/challenger.

The candidate is the best train or tune run by a validation metric; with `include_baselines`, the
scikit-learn baselines of its split compete too, by the same metric. It is judged once on the
held-out test rows of its own split. The current champion is
judged on the same rows only where neither model trained or validated on them: on the very same
split, all its test rows; on another split of the same data, the test rows that were in neither
the champion's train nor its val part. Otherwise there is no fair comparison, and the champion
stays unless the caller asks to promote without one.
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
from dataclasses import dataclass, replace

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipelines import data as data_sources
from pipelines.errors import FittrackError
from pipelines.params import DataParams, RegisterParams
from pipelines.steps.split import run_name
from tracking.metric_names import PRIMARY_METRIC, mode_of
from tracking import env, runs
from tracking.datasets import load_split

STEP = "register"
CHAMPION, CHALLENGER = "champion", "challenger"
# Each version's place in the promotion queue: pending until its register run has decided.
PROMOTION_TAG, PENDING, PROMOTED, KEPT, FAILED = "fittrack.promotion", "pending", "promoted", "kept", "failed"
# On the register run and the version: "fair: ...", "unfair: ..." or "none: ...", with the reason.
COMPARISON_TAG = "fittrack.comparison"
# Fewer unseen rows than this compare noise, not models.
MIN_COMPARED_ROWS, MIN_COMPARED_SHARE = 30, 0.1
# Past this many promotion decisions, a split's test rows have become a selection set.
TEST_SET_DECISIONS_WARNING = 10
# On the register run and the version: which kind of model won the validation ranking, and which baseline.
KIND_TAG, BASELINE_TAG, KERAS, BASELINE = "fittrack.candidate_kind", "fittrack.baseline", "keras", "baseline"
# Two split runs of the same data with these params equal hold the same rows: split reuse's match.
SPLIT_PARAMS = tuple(DataParams().match_params())


@dataclass
class Candidate:
    run: object
    score: float  # its validation score by the chosen metric, at the epoch its model holds

    @property
    def kind(self) -> str:
        return BASELINE if self.run.data.tags.get(runs.STEP_TAG) == BASELINE else KERAS

    @property
    def baseline(self) -> str:
        return self.run.data.params.get("baseline", "") if self.kind == BASELINE else ""


@dataclass
class Comparison:
    rows: np.ndarray | None  # which of the candidate's test rows both are scored on; None: no fair comparison
    reason: str  # one line, starting with "fair:", "unfair:" or "none:"


def run_register(params: RegisterParams | None = None, **changes) -> dict:
    """Register the best candidate; return what happened (version, scores, promoted?). `changes`:
    parameters given by name, for a caller without a RegisterParams."""
    params = replace(params or RegisterParams(), **changes)
    metric, run_id, study, experiment = params.metric, params.run_id, params.study, params.experiment
    model_name, promote_without_comparison = params.model_name, params.promote_without_comparison
    client = MlflowClient()
    with runs.step_run(STEP, run_name="register"):
        candidate = _pick(client, metric, run_id, study, experiment)
        if params.include_baselines:
            candidate = _against_baselines(client, candidate, metric)
        source = candidate.run
        split_run_id = source.data.tags.get("fittrack.split_run_id") or source.data.params.get("split_run_id")
        model_uri = source.data.tags.get("fittrack.model_uri")
        if not split_run_id or not model_uri:
            raise FittrackError(f"run {source.info.run_id} has no logged model and split to register")
        data = load_split(split_run_id)
        # Named like the other steps' runs (`register-digits`), once the data is known.
        mlflow.set_tag("mlflow.runName", run_name(STEP, data.source))
        name = model_name or data_sources.data_name(data.source)
        runs.log_params({"metric": metric, "model_name": name, "source_run_id": source.info.run_id,
                         "split_run_id": split_run_id, "promote_without_comparison": promote_without_comparison,
                         "include_baselines": params.include_baselines})
        mlflow.set_tags({KIND_TAG: candidate.kind, **({BASELINE_TAG: candidate.baseline} if candidate.baseline else {})})
        score_name = f"test_{PRIMARY_METRIC[data.task]}"
        test = data.parts["test"]
        predicted = _predict(model_uri, test.x)
        test_score = _score(data.task, test.y, predicted)
        version = mlflow.register_model(model_uri, name, tags={
            "source_run_id": source.info.run_id, "split_run_id": split_run_id,
            runs.DATA_DIGEST_TAG: data.digest, score_name: f"{test_score:.6f}",
            "study": source.data.tags.get("optuna.study_name", ""), f"val_score_{metric}": f"{candidate.score:.6f}",
            PROMOTION_TAG: PENDING, "fittrack.register_run_id": mlflow.active_run().info.run_id,
            KIND_TAG: candidate.kind, **({BASELINE_TAG: candidate.baseline} if candidate.baseline else {}),
        })
        try:
            done = _decide(client, name, version.version, data, predicted, test_score, score_name,
                           promote_without_comparison)
        except BaseException:
            _set_version_tag(client, name, version.version, PROMOTION_TAG, FAILED)
            raise
        return {"name": name, "version": version.version, **done}


def _decide(client, name: str, version: str, data, predicted, test_score: float, score_name: str,
            promote_unfair: bool) -> dict:
    """Wait for the earlier versions, compare with the champion they left, move the aliases."""
    _wait_for_earlier_promotions(client, name, int(version))
    client.set_registered_model_alias(name, CHALLENGER, version)
    champion = _current(client, name)
    test = data.parts["test"]
    challenger_score, champion_score = test_score, None
    if champion is None or champion.version == version:
        comparison = Comparison(None, "none: no champion yet")
        promoted = True
    else:
        comparison = _comparison(client, name, champion, data)
        if comparison.rows is not None:
            rows = comparison.rows
            challenger_score = _score(data.task, test.y[rows], predicted[rows])
            champion_score = _score(data.task, test.y[rows],
                                    _predict(f"models:/{name}/{champion.version}", _take(test.x, rows)))
            promoted = challenger_score > champion_score
        else:
            promoted = promote_unfair
    compared = 0 if comparison.rows is None else int(comparison.rows.sum())
    decisions = _test_set_decisions(client, data.run_id) + (1 if compared else 0)
    client.set_model_version_tag(name, version, COMPARISON_TAG, comparison.reason)
    client.set_model_version_tag(name, version, PROMOTION_TAG, PROMOTED if promoted else KEPT)
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    mlflow.log_metrics({f"challenger_{score_name}": challenger_score, "compared_test_rows": compared,
                        "test_set_decisions": decisions,
                        **({f"champion_{score_name}": champion_score} if champion_score is not None else {})})
    mlflow.set_tags({"registered_model": name, "registered_version": version, "promoted": str(promoted).lower(),
                     COMPARISON_TAG: comparison.reason})
    message = _message(name, version, champion, comparison, score_name, challenger_score, champion_score, promoted)
    print(f"fittrack: {message}", file=sys.stderr)
    if decisions > TEST_SET_DECISIONS_WARNING:
        print(f"fittrack: warning: the test rows of split run {data.run_id} have now decided {decisions} promotions; "
              "choosing again and again on the same test rows fits the choice to them: make a new split "
              "(another --seed) for the next comparisons", file=sys.stderr)
    return {"promoted": promoted, "challenger_score": challenger_score, "champion_score": champion_score,
            "compared_test_rows": compared, "comparison": comparison.reason}


def _message(name, version, champion, comparison, score_name, challenger_score, champion_score, promoted) -> str:
    if champion_score is not None:
        rows = f"the same {int(comparison.rows.sum())} test rows"
        if promoted:
            return (f"version {version} is the {CHAMPION} of '{name}' ({score_name} {challenger_score:.4f}, "
                    f"was {champion_score:.4f} for version {champion.version} on {rows})")
        return (f"version {version} stays {CHALLENGER} of '{name}': {score_name} {challenger_score:.4f} lost to "
                f"{CHAMPION} version {champion.version}'s {champion_score:.4f} by "
                f"{champion_score - challenger_score:.4f} on {rows}")
    if comparison.rows is None and champion is not None and champion.version != version:
        why = comparison.reason.removeprefix("unfair: ")
        if promoted:
            return (f"version {version} is the {CHAMPION} of '{name}' without a fair comparison, as asked "
                    f"(--promote-without-comparison): {why}")
        return (f"version {version} stays {CHALLENGER} of '{name}': no fair comparison, {why}; "
                f"--promote-without-comparison true promotes it anyway")
    return f"version {version} is the {CHAMPION} of '{name}' ({score_name} {challenger_score:.4f}, no champion before)"


def _comparison(client, name: str, champion, data) -> Comparison:
    """The candidate's test rows that the champion neither trained nor validated on, if enough."""
    test_rows = len(data.parts["test"])
    label = f"champion version {champion.version}"
    their_split, their_digest = champion.tags.get("split_run_id"), champion.tags.get(runs.DATA_DIGEST_TAG)
    if not their_split or not their_digest:
        return Comparison(None, f"unfair: {label} has no split_run_id and {runs.DATA_DIGEST_TAG} tags, so the "
                                "rows it trained on are unknown")
    if their_digest != data.digest:
        return Comparison(None, f"unfair: {label} was trained on another data set (digest {their_digest}, "
                                f"this one {data.digest})")
    everything = np.ones(test_rows, dtype=bool)
    if their_split == data.run_id:
        return Comparison(everything, f"fair: {label} has the same split {data.run_id}: all {test_rows} test rows")
    theirs = _split_run(client, name, label, their_split)
    if theirs is None:
        return Comparison(None, f"unfair: {label}'s split run {their_split} no longer exists, so the rows it "
                                "trained on are unknown")
    if _same_split(theirs, client.get_run(data.run_id)):
        return Comparison(everything, f"fair: {label}'s split {their_split} has the same data and split params: "
                                      f"all {test_rows} test rows")
    try:
        their_data = load_split(their_split)
    except Exception as exc:
        raise FittrackError(f"cannot read split run {their_split} of {label} of {name!r}: {_first_line(exc)}") from None
    seen = np.concatenate([_row_keys(their_data.parts[part], data) for part in ("train", "val")])
    unseen = ~np.isin(_row_keys(data.parts["test"], data), seen)
    kept, needed = int(unseen.sum()), max(MIN_COMPARED_ROWS, math.ceil(MIN_COMPARED_SHARE * test_rows))
    where = (f"of the {test_rows} test rows of split {data.run_id} were in neither train nor val of {label}'s "
             f"split {their_split}")
    if kept < needed:
        return Comparison(None, f"unfair: only {kept} {where} (at least {needed} needed)")
    return Comparison(unseen, f"fair: {kept} {where}")


def _split_run(client, name: str, label: str, run_id: str):
    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise FittrackError(f"cannot read split run {run_id} of {label} of {name!r}: {_first_line(exc)}") from None


def _same_split(a, b) -> bool:
    """Two split runs of the same data with the same params hold the same rows in each part."""
    if a.data.tags.get(runs.DATA_DIGEST_TAG) != b.data.tags.get(runs.DATA_DIGEST_TAG):
        return False
    return all(_same_value(a.data.params.get(k), b.data.params.get(k)) for k in SPLIT_PARAMS)


def _same_value(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    if a == b:
        return True
    try:  # `mlflow run` logs -P values as typed ("0.20", "1e-1")
        return float(a) == float(b)
    except ValueError:
        return False


def _row_keys(part, data) -> np.ndarray:
    """One hash per row of features and target, so rows of two splits match by content."""
    import pandas as pd

    if data.kind == "image":
        flat = np.ascontiguousarray(np.asarray(part.x).reshape(len(part), -1))
        return np.array([hashlib.blake2b(row.tobytes() + str(label).encode(), digest_size=16).hexdigest()
                         for row, label in zip(flat, part.y)])
    frame = part.x.assign(**{data.target: part.y})
    return pd.util.hash_pandas_object(frame, index=False).to_numpy()


def _test_set_decisions(client, split_run_id: str) -> int:
    """How many promotions (of any model) this split's test rows already decided."""
    versions = client.search_model_versions(f"tags.split_run_id = '{split_run_id}'")
    return sum(1 for v in versions if v.tags.get(COMPARISON_TAG, "").startswith("fair:"))


def _pick(client, metric: str, run_id: str, study: str, experiment: str) -> Candidate:
    if run_id:
        # Several ids (comma-separated): the best of them, as `main` asks of its train and tune runs.
        scored = []
        for one in filter(None, (part.strip() for part in run_id.split(","))):
            try:
                run = client.get_run(one)
            except Exception:
                raise FittrackError(f"run {one!r} not found in the tracking store") from None
            scored.append(Candidate(run, _validation_score(client, run, metric)))
        if not scored:
            raise FittrackError(f"run_id {run_id!r} names no run")
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
        raise FittrackError(f"no finished run in {where} logged metric {metric!r}")
    best = (max if mode_of(metric) == "max" else min)(scored, key=lambda pair: pair[1])
    return Candidate(*best)


def _against_baselines(client, best: Candidate, metric: str) -> Candidate:
    """The best of `best` and the baselines of its split, by `metric` on validation; a tie keeps `best`."""
    split_run_id = best.run.data.tags.get("fittrack.split_run_id") or best.run.data.params.get("split_run_id")
    if not split_run_id or best.kind == BASELINE:
        return best
    baselines = _baselines_of(client, best.run.info.experiment_id, split_run_id)
    if baselines is None:
        print(f"fittrack: no finished baselines run of split {split_run_id}: only the Keras candidates compete",
              file=sys.stderr)
        return best
    mlflow.set_tag("fittrack.baselines_run_id", baselines.info.run_id)
    children = client.search_runs(
        [baselines.info.experiment_id],
        f"tags.`mlflow.parentRunId` = '{baselines.info.run_id}' and tags.`{runs.STEP_TAG}` = '{BASELINE}' "
        "and attributes.status = 'FINISHED'", max_results=1000)
    keras_score, compared_on = best.score, metric
    plain = _PLAIN_LOSS.get(metric)
    if plain:
        # A Keras run's val_loss is its objective, label smoothing included; a baseline's is its log
        # loss. The plain cross-entropy at the model's epoch is the number both logged.
        at_epoch = _validation_score(client, best.run, plain, strict=False)
        if at_epoch is not None:
            keras_score, compared_on = at_epoch, plain
    scored = [Candidate(r, r.data.metrics[compared_on]) for r in children
              if compared_on in r.data.metrics and r.data.tags.get("fittrack.model_uri")]
    if not scored:
        return best
    ranked = Candidate(best.run, keras_score)
    better = (max if mode_of(metric) == "max" else min)([ranked, *scored], key=lambda c: c.score)
    if better is ranked:
        return best
    print(f"fittrack: baseline {better.baseline} ({compared_on} {better.score:.4f}) beats the best Keras run "
          f"{best.run.info.run_id} ({keras_score:.4f}) on validation: it is the candidate", file=sys.stderr)
    return better


# What a loss is compared as between a Keras run and a baseline: the plain cross-entropy both log.
_PLAIN_LOSS = {"val_loss": "val_cross_entropy"}


def _baselines_of(client, experiment_id: str, split_run_id: str):
    """The newest finished baselines run of a split, or None."""
    found = client.search_runs(
        [experiment_id], f"tags.`{runs.STEP_TAG}` = 'baselines' and attributes.status = 'FINISHED' "
        f"and tags.`fittrack.split_run_id` = '{split_run_id}'",
        order_by=["attributes.start_time DESC"], max_results=1)
    if not found:  # a baselines run from before the tag: its param says the split
        found = client.search_runs(
            [experiment_id], f"tags.`{runs.STEP_TAG}` = 'baselines' and attributes.status = 'FINISHED' "
            f"and params.split_run_id = '{split_run_id}'", order_by=["attributes.start_time DESC"], max_results=1)
    return found[0] if found else None


def _validation_score(client, run, metric: str, strict: bool = True):
    """`metric` at the epoch whose weights the run's model holds (a baseline's model: its one fit).

    A train run logs its best epoch by its `monitor`; when `metric` is another metric, its best
    value over all epochs may belong to an epoch the model does not hold. A tune run's model is
    its best trial's best epoch, and trials monitor the study's metric, so `best_value` is that
    metric there; for another metric, the best trial is read like a train run.
    """
    if run.data.tags.get(runs.STEP_TAG) == BASELINE:
        if metric in run.data.metrics:
            return run.data.metrics[metric]
        if strict:
            raise FittrackError(f"baseline run {run.info.run_id} has no metric {metric!r}")
        return None
    source = run
    if run.data.tags.get(runs.STEP_TAG) == "tune":
        if run.data.params.get("metric") == metric and "best_value" in run.data.metrics:
            return run.data.metrics["best_value"]
        trial_run_id = run.data.tags.get("best_trial_run_id")
        source = client.get_run(trial_run_id) if trial_run_id else None
    if source is not None:
        epoch = _best_epoch(source)
        if epoch is not None:
            at_epoch = [m.value for m in client.get_metric_history(source.info.run_id, metric) if m.step == epoch]
            if at_epoch:
                return at_epoch[-1]
    if strict:
        raise FittrackError(f"run {run.info.run_id} has no metric {metric!r} at the best epoch of its model")
    return None


def _best_epoch(run) -> int | None:
    """The epoch whose weights the run's model holds: `best_epoch`, else checkpoints/best.json."""
    if "best_epoch" in run.data.metrics:
        return int(run.data.metrics["best_epoch"])
    import json

    try:
        local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="checkpoints/best.json")
    except (MlflowException, OSError):
        return None
    with open(local) as f:
        return int(json.load(f)["epoch"])


def _experiment_id(client, experiment: str) -> str:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        try:
            found = client.get_experiment(experiment)
        except Exception:
            found = None
    if found is None:
        raise FittrackError(f"experiment {experiment!r} not found")
    return found.experiment_id


def _current(client, name: str):
    """The champion version, or None when the alias is not set yet; any other failure is an error.

    A missing alias raises INVALID_PARAMETER_VALUE "Registered model alias champion not found."
    (SQL and file stores; the same code and message come back over REST as a RestException); a
    missing model RESOURCE_DOES_NOT_EXIST. A 403, a timeout or a broken store must not read as
    "no champion yet", which would promote without any comparison.
    """
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or (
                exc.error_code == "INVALID_PARAMETER_VALUE" and f"alias {CHAMPION} not found" in str(exc).lower()):
            return None
        raise FittrackError(f"cannot read the {CHAMPION} of registered model {name!r}: {_first_line(exc)}") from None
    except Exception as exc:
        raise FittrackError(f"cannot read the {CHAMPION} of registered model {name!r}: "
                            f"{type(exc).__name__}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:500] if lines else type(exc).__name__


def _set_version_tag(client, name: str, version: str, key: str, value: str) -> None:
    try:
        client.set_model_version_tag(name, version, key, value)
    except Exception:  # the registry may be what failed; the error being raised says why
        pass


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


def _predict(model_uri: str, x) -> np.ndarray:
    """The model's predictions for rows as the source had them."""
    return np.asarray(mlflow.pyfunc.load_model(model_uri).predict(x))


def _take(x, rows: np.ndarray):
    return x.iloc[rows] if hasattr(x, "iloc") else x[rows]


def _score(task: str, y, predicted) -> float:
    from sklearn.metrics import accuracy_score, r2_score

    if task == "regression":
        return float(r2_score(y, predicted))
    return float(accuracy_score(np.asarray(y).astype(str), np.asarray(predicted).astype(str)))
