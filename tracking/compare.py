"""Comparing runs: a leaderboard of train and trial runs by a validation metric, and their curves.

Compare only reads the tracking store: it opens no run. Every score comes from a run's metric
history (`step` = the epoch's number, from 1), so a crashed or pruned run still shows its best epoch so far.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass

from tracking.errors import FittrackError
from tracking.fields import check_fields, param
from tracking.metric_names import DEFAULT_METRIC, mode_of

__all__ = ["FORMATS", "CompareParams", "Entry", "compare", "leaderboard", "plot_curves", "render", "rows", "select_runs"]

FORMATS = ("table", "csv", "json")
#: The steps whose runs train a Keras model epoch by epoch.
COMPARED_STEPS = ("train", "trial")
#: The tag naming a run's pipeline step; a column too, telling train runs from Optuna trials.
STEP_COLUMN = "fittrack.step"
#: Hyperparameters shown when a run has them, in this order; `model` is the resolved one.
PARAM_COLUMNS = ("model", "layers", "units", "dropout", "learning_rate", "optimizer", "batch_size", "l2")

_PAGE = 1000


@dataclass
class Entry:
    run: object
    history: list  # [(epoch, value)], ordered by epoch
    best_epoch: int
    best_value: float
    test_value: float | None
    epochs_run: int


@dataclass
class CompareParams:
    """`fittrack compare`'s parameters (its options are built from these fields)."""

    metric: str = param(DEFAULT_METRIC, "Validation metric that ranks the runs by their best epoch (loss, mse, mae "
                        "minimised; the rest maximised), e.g. val_loss, val_accuracy, val_auc.")
    experiment: str = param("", "Compare this experiment's train and trial runs (name or id; default: the current "
                            "one).")
    study: str = param("", "Only the trial runs of this Optuna study.")
    filter_string: str = param("", "MLflow search filter that narrows the runs, e.g. \"params.optimizer = 'adam'\".",
                               option="filter")
    run_ids: tuple = param((), "Compare these runs (repeatable); instead of the options above.", option="run-id",
                           multiple=True)
    output_format: str = param("table", choices=FORMATS, option="format")
    output: str = param("", "Write the leaderboard to this file instead of standard output.")
    limit: int = param(0, "Only the best N runs (0: all).", low=0)
    plot: str = param("", "Also draw the runs' validation curves by epoch into this PNG file.")

    def __post_init__(self):
        check_fields(self)
        if self.plot and not self.plot.lower().endswith(".png"):
            raise FittrackError(f"plot must be a .png file, got {self.plot!r}")


def compare(params: CompareParams | None = None, **changes) -> str:
    """Rank the selected runs by `params.metric`; return the rendered leaderboard, written to
    `output` when given, and draw their validation curves into `plot` when given. `changes`:
    parameters given by name, for a caller without a CompareParams."""
    from dataclasses import replace

    from mlflow import MlflowClient

    params = replace(params or CompareParams(), **changes)
    metric, experiment, study, filter_string = params.metric, params.experiment, params.study, params.filter_string
    run_ids, output_format, output, limit, plot = (params.run_ids, params.output_format, params.output,
                                                   params.limit or None, params.plot)
    client = MlflowClient()
    found, where = select_runs(client, experiment=experiment, study=study, filter_string=filter_string,
                               run_ids=run_ids)
    entries = leaderboard(client, found, metric, where=where, limit=limit)
    text = render(*rows(entries, metric), output_format)
    # Everything is computed before anything is written: no half-written file on a bad input.
    if plot:
        plot_curves(entries, metric, plot)
    if output:
        _makedirs_for(output)
        with open(output, "w", encoding="utf-8", newline="") as f:
            f.write(text)
    return text


def select_runs(client, experiment: str = "", study: str = "", filter_string: str = "",
                run_ids: tuple = ()) -> tuple[list, str]:
    """The runs to compare and a phrase naming where they came from (for messages).

    `run_ids` takes exactly those runs, whatever their step; otherwise the train and trial runs
    of the experiment (default: the current one), narrowed to a study's trials and by a filter.
    """
    from mlflow.exceptions import MlflowException

    from tracking import runs

    if run_ids:
        if experiment or study or filter_string:
            raise FittrackError("--run-id picks runs by id; leave out --experiment, --study and --filter")
        found = []
        for run_id in run_ids:
            try:
                found.append(client.get_run(run_id))
            except MlflowException:
                raise FittrackError(f"run {run_id!r} not found in the tracking store") from None
        return found, f"the given runs ({', '.join(run_ids)})"

    experiment_id = _experiment_id(client, experiment) if experiment else runs._current_experiment_id()
    where = f"experiment {experiment or _experiment_name(client, experiment_id)!r}"
    # MLflow's grammar is a flat AND of clauses (no parentheses), so joining with "and" is safe.
    clauses = [filter_string.strip()] if filter_string.strip() else []
    if study:
        clauses.append(f"tags.`{runs.STEP_TAG}` = 'trial' and tags.`optuna.study_name` = '{runs._quote(study)}'")
    try:
        found = _search_all(client, experiment_id, " and ".join(clauses))
    except MlflowException as exc:
        if filter_string.strip():
            reason = str(exc.message).splitlines()[0]
            raise FittrackError(f"invalid filter {' '.join(filter_string.split())!r}: {reason}") from None
        raise
    # MLflow's filter has neither OR nor IN for tags, so the step is checked here.
    found = [r for r in found if r.data.tags.get(runs.STEP_TAG) in COMPARED_STEPS]
    matching = f" matching filter '{' '.join(filter_string.split())}'" if filter_string.strip() else ""
    if study:
        if not found:
            raise FittrackError(f"study {study!r} has no trial runs in {where}{matching}")
        where = f"study {study!r} ({where})"
    if not found:
        raise FittrackError(f"{where} has no train or trial runs{matching}")
    return found, where


def leaderboard(client, found: list, metric: str, where: str = "the selected runs",
                limit: int | None = None) -> list[Entry]:
    """The runs that logged `metric` epoch by epoch, best first in the metric's direction."""
    maximise = mode_of(metric) == "max"
    test_name = "test_" + metric.removeprefix("val_")
    entries = []
    for run in found:
        # The run's latest values say whether it logged the metric at all: no history call otherwise.
        if metric not in run.data.metrics:
            continue
        history = _epochs(client.get_metric_history(run.info.run_id, metric))
        if not history:
            continue
        # The first epoch to reach the best value, as Keras's ModelCheckpoint(save_best_only) keeps it.
        best_epoch, best_value = (max if maximise else min)(history, key=lambda point: point[1])
        epochs_run = run.data.metrics.get("epochs_run")
        entries.append(Entry(run, history, best_epoch, best_value, run.data.metrics.get(test_name),
                             int(epochs_run) if epochs_run is not None else len(history)))
    if not entries:
        raise FittrackError(f"{where}: no run logged metric {metric!r} epoch by epoch" + _available(found))
    entries.sort(key=lambda e: (-e.best_value if maximise else e.best_value, e.run.info.start_time or 0))
    return entries[:limit] if limit else entries


def rows(entries: list[Entry], metric: str) -> tuple[list[str], list[dict]]:
    """Columns and one row per entry; a param column is kept only when some run has it."""
    test_name = "test_" + metric.removeprefix("val_")
    out = []
    for rank, e in enumerate(entries, start=1):
        info, params = e.run.info, e.run.data.params
        row = {"rank": rank, "run_id": info.run_id, "run_name": info.run_name,
               STEP_COLUMN: e.run.data.tags.get(STEP_COLUMN)}
        for name in PARAM_COLUMNS:
            value = (params.get("resolved_model") or params.get("model")) if name == "model" else params.get(name)
            row[name] = _number(value)
        row.update({f"best_{metric}": _finite(e.best_value), "best_epoch": e.best_epoch,
                    test_name: _finite(e.test_value), "epochs_run": e.epochs_run,
                    "diagnosis": e.run.data.tags.get("diagnosis"), "status": info.status,
                    "duration_s": _duration(info)})
        out.append(row)
    columns = [c for c in (out[0] if out else {}) if c not in PARAM_COLUMNS or any(r[c] is not None for r in out)]
    return columns, [{c: r[c] for c in columns} for r in out]


def render(columns: list[str], table: list[dict], output_format: str) -> str:
    if output_format == "json":
        return json.dumps(table, indent=2) + "\n"
    if output_format == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows({c: "" if r[c] is None else r[c] for c in columns} for r in table)
        return buffer.getvalue()
    cells = [[_cell(c, r[c]) for c in columns] for r in table]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    numeric = [all(isinstance(r[c], (int, float)) or r[c] is None for r in table) for c in columns]
    lines = ["  ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(columns, widths, numeric))]
    lines += ["  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(row, widths, numeric)) for row in cells]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def plot_curves(entries: list[Entry], metric: str, path: str) -> str:
    """One PNG with every entry's `metric` over epochs, a dot at its best epoch: the overlay that
    shows which runs overfit (a validation loss that turns back up) and which stopped early."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    # The object-oriented API on the Agg canvas: no pyplot state, no display needed.
    figure = Figure(figsize=(8, 5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    names = [e.run.info.run_name or e.run.info.run_id[:8] for e in entries]
    for e, name in zip(entries, names):
        epochs, values = zip(*e.history)
        # Two studies both have a trial-0: the id tells their lines apart.
        label = f"{name} ({e.run.info.run_id[:8]})" if names.count(name) > 1 else name
        line, = axes.plot(epochs, values, marker="." if len(epochs) < 30 else None, linewidth=1.4, label=label)
        axes.plot([e.best_epoch], [e.best_value], "o", color=line.get_color(), markersize=7)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("epoch")
    axes.set_ylabel(metric)
    axes.set_title(f"{metric} by epoch ({'higher' if mode_of(metric) == 'max' else 'lower'} is better; "
                   f"dots: best epoch)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", ncol=1 if len(entries) <= 12 else 2)
    _makedirs_for(path)
    figure.savefig(path, format="png", dpi=100)
    return path


def _search_all(client, experiment_id: str, filter_string: str) -> list:
    found, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=_PAGE, page_token=token,
                                  order_by=["attributes.start_time ASC"])
        found.extend(page)
        token = page.token
        if not token:
            return found


def _epochs(history) -> list[tuple[int, float]]:
    """(epoch, value) by epoch; a step logged twice (a resumed fit) keeps its latest value."""
    latest = {}
    for m in sorted(history, key=lambda m: (m.step, m.timestamp)):
        if not math.isnan(m.value):
            latest[m.step] = m.value
    return sorted(latest.items())


def _experiment_id(client, experiment: str) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(experiment)
    if found is None and experiment.isdigit():
        try:
            found = client.get_experiment(experiment)
        except MlflowException:  # not found, in the store's own words: ours names the value
            found = None
    if found is None:
        raise FittrackError(f"experiment {experiment!r} not found (give an experiment name or id)")
    return found.experiment_id


def _experiment_name(client, experiment_id: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_experiment(experiment_id).name
    except MlflowException:  # the current experiment may be named by an id the store lacks
        return experiment_id


def _available(found: list) -> str:
    names = sorted({k for r in found for k in r.data.metrics if k.startswith("val_")})
    return f"; validation metrics logged there: {', '.join(names)}" if names else ""


def _number(value):
    """A param as its number where it is one, so JSON keeps numbers numbers."""
    if value is None:
        return None
    for kind in (int, float):
        try:
            number = kind(value)
        except ValueError:
            continue
        return number if math.isfinite(number) else value
    return value


def _finite(value):
    # JSON has no NaN: a metric that went NaN is as good as absent here.
    return value if value is None or math.isfinite(value) else None


def _duration(info) -> float | None:
    if info.start_time is None or info.end_time is None:
        return None
    return round((info.end_time - info.start_time) / 1000, 3)


def _cell(column: str, value) -> str:
    if value is None:
        return ""
    if column == "duration_s":
        return f"{value:.1f}"
    if isinstance(value, float) and column not in PARAM_COLUMNS:
        return f"{value:.4f}"
    return str(value)


def _makedirs_for(path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
