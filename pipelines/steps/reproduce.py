"""`fittrack reproduce RUN_ID`: a finished train run trained again from its record.

The record is the run's params (data, training and transfer options, parsed back with the
dataclasses' field types), its split run (the same rows, checked by digest against both the
original run's dataset inputs and the data source) and its code version. The reproduction is a
normal train run, tagged `fittrack.reproduces`, so everything that reads train runs reads it.
"""

from __future__ import annotations

import dataclasses
import inspect
import pathlib
import subprocess
import sys
import types
import typing
from dataclasses import dataclass, field

from pipelines.errors import FittrackError
from pipelines.params import DataParams
from pipelines.train import TrainConfig
from pipelines.transfer import TransferConfig

__all__ = ["REPRODUCES_TAG", "Recipe", "code_warnings", "compare_metrics", "format_table", "parse_config", "plan",
           "reproduce"]

REPRODUCES_TAG = "fittrack.reproduces"
GIT_COMMIT_TAG = "mlflow.source.git.commit"  # set by `mlflow run`
DATASET_CONTEXT_TAG = "mlflow.data.context"
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
_PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[2]


@dataclass
class Recipe:
    """What it takes to train a run again, gathered and checked before any run opens."""

    run_id: str
    split_run_id: str
    data_params: DataParams
    config: TrainConfig
    transfer: TransferConfig | None
    outage_timeout: float
    warnings: list[str] = field(default_factory=list)


def plan(run_id: str, client=None) -> Recipe:
    """Read and check run `run_id`'s record; raise FittrackError for what cannot be reproduced."""
    from mlflow import MlflowClient

    from tracking import runs

    client = client or MlflowClient()
    run = _finished_train_run(client, run_id)
    params, tags = run.data.params, run.data.tags
    warnings: list[str] = []
    data_params = parse_config(DataParams, params, run_id, warnings)
    config = parse_config(TrainConfig, params, run_id, warnings)
    transfer = _transfer(params, tags, run_id, warnings)
    outage_timeout = _outage_timeout(params, run_id)
    # The tag is the split the run trained on; the param is what was asked (empty: made or reused one).
    split_run_id = tags.get("fittrack.split_run_id") or logged_value(params.get("split_run_id", ""))
    if not split_run_id:
        raise FittrackError(f"run {run_id!r} records no split_run_id; cannot reproduce its split")
    _check_split(client, run, split_run_id)
    warnings += code_warnings(tags, run_id, runs.code_version(), _git_head())
    return Recipe(run_id, split_run_id, data_params, config, transfer, outage_timeout, warnings)


def reproduce(run_id: str, verbose: int | None = None) -> tuple[str, list[tuple]]:
    """Train run `run_id` again; return the new run's id and the metric rows of `compare_metrics`."""
    from mlflow import MlflowClient

    from pipelines.steps.train import run_train

    recipe = plan(run_id)
    for line in recipe.warnings:
        print(f"fittrack: warning: {line}", file=sys.stderr)
    new_run_id = run_train(recipe.data_params, recipe.config, split_run_id=recipe.split_run_id, verbose=verbose,
                           transfer=recipe.transfer, outage_timeout=recipe.outage_timeout,
                           tags={REPRODUCES_TAG: run_id})
    client = MlflowClient()
    original, new = client.get_run(run_id), client.get_run(new_run_id)
    then, now = original.data.tags.get("fittrack.device"), new.data.tags.get("fittrack.device")
    if then and now and then != now:
        # Kernels differ between devices: epochs that differ here are not a fault of the record.
        print(f"fittrack: warning: run {run_id} trained on {then}, this reproduction on {now}", file=sys.stderr)
    return new_run_id, compare_metrics(original.data.metrics, new.data.metrics)


def parse_config(cls, params: dict, run_id: str, warnings: list[str]):
    """An instance of dataclass `cls` from logged param strings, field by field with its type.

    Only the fields `cls` logs are read (its `params()` where it has one: TrainConfig leaves out
    `resolved_model`, which training derives). A field the run did not log (one added since)
    takes the value runs trained with before it existed (its `before`, where the default changed
    what they did) or else its default, with a warning."""
    hints = typing.get_type_hints(cls)
    logged = set(cls().params()) if hasattr(cls, "params") else {f.name for f in dataclasses.fields(cls)}
    values, missing = {}, []
    for f in dataclasses.fields(cls):
        if not f.init or f.name not in logged:
            continue
        if f.name not in params:
            missing.append(f.name)
            if f.metadata.get("before") is not None:
                values[f.name] = f.metadata["before"]
            continue
        values[f.name] = _parse(logged_value(params[f.name]), hints[f.name], f.name, run_id)
    if missing:
        defaults = ", ".join(f"{f.name}={values.get(f.name, _default(f))!r}" for f in dataclasses.fields(cls)
                             if f.name in missing)
        warnings.append(f"run {run_id} logged no {', '.join(missing)}; using what runs did before it existed, "
                        f"else the default ({defaults})")
    return cls(**values)


def logged_value(text: str) -> str:
    """A param as the command got it: `mlflow run` logs an empty -P value as the shell quote `''`."""
    return "" if text == "''" else text


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise FittrackError(f"{f.name!r} has no default")


def _parse(text: str, kind, name: str, run_id: str):
    bad = FittrackError(f"run {run_id!r} has param {name}={text!r}, which is not a {getattr(kind, '__name__', kind)}")
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if type(None) in options and text == "None":
            return None
        for option in options:
            if option is not type(None):
                try:
                    return _parse(text, option, name, run_id)
                except FittrackError:
                    continue
        raise bad
    if kind is bool:
        if text.strip().lower() in _TRUE:
            return True
        if text.strip().lower() in _FALSE:
            return False
        raise bad
    if kind is int:
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)  # `mlflow run -P epochs=3.0` is logged as typed
        except ValueError:
            raise bad from None
        if not number.is_integer():
            raise bad
        return int(number)
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise bad from None
    if kind is str:
        return text
    raise FittrackError(f"run {run_id!r} has param {name}={text!r}, and fittrack cannot read a {kind} from a "
                        f"param; teach pipelines/steps/reproduce.py how")


def _finished_train_run(client, run_id: str):
    from mlflow.exceptions import MlflowException

    from tracking import runs

    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise FittrackError(f"run {run_id!r} not found in the tracking store") from None
    if run.info.lifecycle_stage == "deleted":
        raise FittrackError(f"run {run_id!r} was deleted; restore it to reproduce it")
    step = run.data.tags.get(runs.STEP_TAG)
    if step != "train":
        what = f"a {step} run" if step else "not a fittrack run"
        raise FittrackError(f"run {run_id!r} is {what}; only a train run can be reproduced")
    if run.info.status != "FINISHED":
        raise FittrackError(f"run {run_id!r} is {run.info.status}, not FINISHED; only a finished train run can be "
                            f"reproduced (fittrack train --run-id resumes a crashed one)")
    return run


def _transfer(params: dict, tags: dict, run_id: str, warnings: list[str]) -> TransferConfig | None:
    if not logged_value(params.get("init_model", "")).strip():
        return None
    transfer = parse_config(TransferConfig, params, run_id, warnings)
    name, version = tags.get("fittrack.init_model_name"), tags.get("fittrack.init_model_version")
    if "@" in transfer.init_model and name and version:
        # An alias moves; the version it pointed at when the run started does not.
        pinned = f"models:/{name}/{version}"
        warnings.append(f"run {run_id} started from {transfer.init_model}, then version {version}; "
                        f"starting from {pinned}")
        transfer = dataclasses.replace(transfer, init_model=pinned)
    return transfer


def _outage_timeout(params: dict, run_id: str) -> float:
    # Logged only when `mlflow run` recorded it as a -P value; it changes no epoch.
    if "outage_timeout" in params:
        return _parse(params["outage_timeout"], float, "outage_timeout", run_id)
    from pipelines.steps.train import run_train

    return inspect.signature(run_train).parameters["outage_timeout"].default


def _check_split(client, run, split_run_id: str) -> None:
    """The split run's parts are the rows the run trained on, and its source still holds that data."""
    from mlflow.exceptions import MlflowException

    from pipelines import data as data_sources
    from tracking import runs
    from tracking.datasets import dataset_inputs, load_split

    run_id = run.info.run_id
    try:
        split_run = client.get_run(split_run_id)
    except MlflowException:
        raise FittrackError(f"split run {split_run_id!r} of run {run_id!r} not found in the tracking store") from None
    try:
        split = load_split(split_run_id)
    except Exception as exc:
        raise FittrackError(f"split run {split_run_id!r} of run {run_id!r} has no readable split artifacts "
                            f"({type(exc).__name__}: {exc})".splitlines()[0]) from None
    trained_on = {_context(i): i.dataset.digest for i in run.inputs.dataset_inputs}
    for name, dataset in dataset_inputs(split).items():
        context = _context_name(name)
        if context in trained_on and trained_on[context] != dataset.digest:
            raise FittrackError(f"the {name} part of split run {split_run_id!r} is not the one run {run_id!r} "
                                f"trained on (digest {trained_on[context]} then, {dataset.digest} now)")
    # Loaded as the split step loaded it (DataParams.load), from the path the split resolved (the run
    # may have named it relatively).
    split_params = parse_config(DataParams, split_run.data.params, split_run_id, [])
    source = split.source or split_params.data
    try:
        dataset = dataclasses.replace(split_params, data=source).load()
    except FittrackError as exc:
        raise FittrackError(f"{exc}; cannot reproduce the split of run {run_id}") from None
    then = split_run.data.tags.get(runs.DATA_DIGEST_TAG, split.digest)
    if str(dataset.digest) != str(then):
        what = "data set" if source.startswith(data_sources.BUILTIN_PREFIX) else "data file"
        raise FittrackError(f"{what} {source!r} changed since run {run_id} (digest {then} then, {dataset.digest} "
                            f"now); cannot reproduce its split")


def _context(dataset_input) -> str | None:
    return next((t.value for t in dataset_input.tags if t.key == DATASET_CONTEXT_TAG), None)


def _context_name(part: str) -> str:
    from tracking.datasets import CONTEXTS

    return CONTEXTS[part]


def code_warnings(tags: dict, run_id: str, code_version: str, git_head: str | None) -> list[str]:
    from tracking import runs

    out = []
    commit = tags.get(GIT_COMMIT_TAG)
    if commit and git_head and commit != git_head:
        out.append(f"run {run_id} was made at git commit {commit}; this checkout is at {git_head}")
    recorded = tags.get(runs.CODE_VERSION_TAG)
    if recorded and recorded != code_version:
        out.append(f"fittrack's code changed since run {run_id} (code version {recorded} then, {code_version} "
                   f"now); its epochs may differ")
    return out


def _git_head() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_PROJECT_ROOT, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def compare_metrics(original: dict, reproduction: dict) -> list[tuple]:
    """(key, original, reproduction or None, difference or None) for every metric of the original
    but the machine's (system/*: CPU, memory, disk, network while it ran, no part of what it learned).

    Each value is the metric's last one: the test score, a best_* figure, or the last epoch's."""
    rows = []
    for key in sorted(k for k in original if not k.startswith("system/")):
        then, now = original[key], reproduction.get(key)
        rows.append((key, then, now, None if now is None else now - then))
    return rows


def format_table(original_id: str, new_id: str, rows: list[tuple]) -> str:
    width = max([len("metric")] + [len(row[0]) for row in rows])
    lines = [f"fittrack: run {new_id} reproduces run {original_id}",
             f"  {'metric':<{width}}  {'original':>14}  {'reproduction':>14}  {'difference':>12}"]
    for key, then, now, diff in rows:
        now_text = "-" if now is None else f"{now:.6g}"
        diff_text = "-" if diff is None else f"{diff:+.3g}"
        lines.append(f"  {key:<{width}}  {then:>14.6g}  {now_text:>14}  {diff_text:>12}")
    return "\n".join(lines)
