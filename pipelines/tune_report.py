"""What the tune step's parent run carries at the end: best trial, counts, plots, test score, model."""

from __future__ import annotations

import os
import tempfile
import warnings

import mlflow

from pipelines.errors import FittrackError
from pipelines.evaluate import evaluate_and_log_test
from pipelines.tune import RUN_ID_ATTR


def report(study, params, prepared, parent_run_id: str) -> None:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    names = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}
    counts = {name: sum(t.state == state for t in trials) for state, name in names.items()}
    mlflow.log_metrics({f"trials_{k}": v for k, v in counts.items()})
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise FittrackError(f"no trial of study {params.study!r} completed ({counts['pruned']} pruned, "
                            f"{counts['failed']} failed); see the trial runs' error tags")
    best = study.best_trial
    best_run_id = best.user_attrs.get(RUN_ID_ATTR, "")
    mlflow.log_params({f"best_{k}": v for k, v in best.params.items()})
    mlflow.log_metrics({"best_value": best.value, "best_trial_number": best.number})
    mlflow.set_tags({"best_trial_run_id": best_run_id, "optuna.direction": study.direction.name.lower()})
    _log_plots(study)
    test_metrics = _evaluate_best(best_run_id, prepared)
    _print_summary(study, params, counts, test_metrics)


def _evaluate_best(best_run_id: str, prepared) -> dict:
    """The best trial's best epoch, evaluated once on the test split, logged here as the model."""
    import keras

    from pipelines import train as training
    from pipelines.models import compile_model
    from pipelines.steps.reproduce import parse_config
    from pipelines.steps.train import log_trained_model

    local = mlflow.artifacts.download_artifacts(run_id=best_run_id, artifact_path="checkpoints/best.keras")
    # Uncompiled, then compiled as the trial was (its loss is evaluate_and_log_test's test_loss): a checkpoint
    # from an earlier fittrack, compiled with Keras metrics of its own, loads as well as a new one.
    model = keras.models.load_model(local, compile=False)
    config = parse_config(training.TrainConfig, mlflow.get_run(best_run_id).data.params, best_run_id, [])
    compile_model(model, config, prepared.meta["task"], len(prepared.meta["classes"]))
    test_metrics, _ = evaluate_and_log_test(model, prepared)  # as the train step's: test_* and evaluation/
    log_trained_model(model, prepared)
    return test_metrics


def _log_plots(study) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    drawings = {
        "optimization_history.png": plots.plot_optimization_history,
        "param_importances.png": plots.plot_param_importances,
        "intermediate_values.png": plots.plot_intermediate_values,
        "parallel_coordinate.png": plots.plot_parallel_coordinate,
    }
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna marks its matplotlib backend experimental
        for name, draw in drawings.items():
            try:
                ax = draw(study)
            except (ValueError, RuntimeError, ZeroDivisionError):
                continue  # e.g. importances need two complete trials that differ
            figure = (ax.flat[0] if hasattr(ax, "flat") else ax).get_figure()
            figure.set_size_inches(9, 5)
            figure.tight_layout()
            figure.savefig(os.path.join(tmp, name), dpi=90)
            plt.close(figure)
        mlflow.log_artifacts(tmp, "plots")


def _print_summary(study, params, counts, test_metrics) -> None:
    from optuna.trial import TrialState

    finished = [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    reverse = study.direction.name == "MAXIMIZE"
    ranked = sorted((t for t in finished if t.state == TrialState.COMPLETE), key=lambda t: t.value, reverse=reverse)
    lines = [f"study {params.study}: {counts['complete']} complete, {counts['pruned']} pruned, "
             f"{counts['failed']} failed",
             f"{'trial':>5}  {'state':<8} {params.metric:>12}  {'epochs':>6}  run"]
    for t in ranked[:10]:
        epochs = t.user_attrs.get("epochs_run", t.last_step or 0)
        lines.append(f"{t.number:>5}  {t.state.name:<8} {t.value:>12.4f}  {epochs:>6}  {t.user_attrs.get(RUN_ID_ATTR, '')}")
    pruned = [t for t in finished if t.state == TrialState.PRUNED]
    for t in pruned[:5]:
        lines.append(f"{t.number:>5}  PRUNED   {'':>12}  {t.user_attrs.get('epochs_run', t.last_step or 0):>6}  {t.user_attrs.get(RUN_ID_ATTR, '')}")
    lines.append("best trial on the test split: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(test_metrics.items())))
    print("\n".join(lines))
