"""`fittrack`: the pipeline steps from the shell; MLproject's entry points call the same commands.

Heavy imports (MLflow, TensorFlow) happen inside the commands so that `--help` stays fast.
"""

from __future__ import annotations

import os
import sys
import warnings

import click

# Quieter logs without hiding anything a user needs: TensorFlow's C++ info lines and
# per-file artifact download bars say nothing about the run.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# Library notices that repeat on every run and ask nothing of the user.
for _message in (".*Integer columns in Python cannot represent missing values.*", ".*type hints.*",
                 ".*is experimental.*", ".*experimental feature.*"):
    warnings.filterwarnings("ignore", message=_message)

from pipelines.compare_command import compare
from pipelines.errors import FittrackError
from pipelines.params import DEFAULT_METRIC, DataParams, PipelineParams, TuneParams, click_options, take
from pipelines.server_command import server

_default_showwarning = warnings.showwarning
_warned: set[str] = set()


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """fittrack's own warnings as one line each, once: the data may be read twice in a run, and
    MLflow resets Python's once-only warning memory in between."""
    if not category.__module__.startswith(("pipelines.", "tracking.")):
        return _default_showwarning(message, category, filename, lineno, file, line)
    if str(message) not in _warned:
        _warned.add(str(message))
        click.echo(f"fittrack: warning: {message}", err=True)


warnings.showwarning = _show_warning

class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except FittrackError as exc:
            # One clear line and a non-zero exit; the run was already marked FAILED.
            raise click.ClickException(str(exc)) from None


def data_options(f):
    """The data parameters (pipelines.params.DataParams) as options."""
    return click_options(DataParams)(f)


def train_options(f=None, *, exclude: tuple = ()):
    """The training parameters (pipelines.train.TrainConfig) as options, and --quiet; `exclude` leaves
    out those a command defines its own way."""
    if f is None:
        return lambda g: train_options(g, exclude=exclude)
    from pipelines.train import TrainConfig

    f = click.option("--quiet", is_flag=True, help="No progress output from Keras.")(f)
    return click_options(TrainConfig, exclude=exclude)(f)


def _split_data_params(kwargs: dict):
    return take(DataParams, kwargs)


def _train_config(kwargs: dict, seed: int):
    from pipelines.train import TrainConfig

    kwargs.pop("quiet", None)
    return TrainConfig(seed=seed, **kwargs)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """fittrack: tracked, reproducible Keras training on MLflow.

    Every step is an MLflow run; `mlflow ui` shows every epoch, checkpoint and model.
    """
    from tracking import entry

    entry.claim()


@cli.command()
@data_options
def split(**kwargs):
    """Split data into train, validation and test parts, logged as artifacts and dataset inputs."""
    from pipelines.steps.split import run_split

    run_id = run_split(_split_data_params(kwargs))
    click.echo(f"fittrack: split run {run_id}")


@cli.command()
@click.option("--split-run-id", required=True, help="The split run whose parts the baselines are fitted on.")
@click_options(DataParams, only=("seed",))
def baselines(split_run_id, seed):
    """Fit scikit-learn baselines (dummy, linear, kernel SVM) on a split: the bar for the Keras runs."""
    from pipelines.steps.baselines import run_baselines

    click.echo(f"fittrack: baselines run {run_baselines(split_run_id, seed)}")


@cli.command()
@data_options
@click.option("--split-run-id", default="", help="Train on this split run's parts; default: reuse a matching "
              "finished split, or make one.")
@train_options
@click.option("--init-model", default="", help="Start from this model's layers under a new output head: "
              "models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/checkpoints/best.keras or a train run id "
              "(its best checkpoint). The network then comes from it, not from --model, --layers, --units.")
@click.option("--freeze-epochs", type=click.IntRange(min=0), default=3, show_default=True,
              help="With --init-model: epochs that train only the new head before every layer is fine-tuned "
                   "(0: fine-tune every layer from the start; --epochs or more: never).")
@click.option("--fine-tune-learning-rate", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="With --init-model: the learning rate once every layer trains (0: --learning-rate / 10).")
@click.option("--head-init", type=click.Choice(["probe", "random"]), default="probe", show_default=True,
              help="With --init-model: probe starts the new head as a linear model fitted on the reused layers' "
                   "features of the training split (LP-FT); random as Keras initialises it.")
@click.option("--outage-timeout", type=click.FloatRange(0, 600), default=300, show_default=True,
              help="Seconds a tracking server may be away (requests retried, training goes on) before the run "
                   "stops with its model and checkpoints kept in ./fittrack-unsent.")
@click.option("--run-id", default="", help="Go on with this train run after a crash: training resumes from its "
              "last epoch (kept in ./.fittrack/resume), its metric history continuous.")
def train(split_run_id, quiet, init_model, freeze_epochs, fine_tune_learning_rate, head_init, outage_timeout,
          run_id, **kwargs):
    """Train a Keras model, logging every epoch, the best checkpoint, test metrics and the model."""
    from pipelines.steps.train import run_train
    from pipelines.transfer import TransferConfig

    data_params = _split_data_params(kwargs)
    config = _train_config(kwargs, data_params.seed)
    transfer = TransferConfig(init_model=init_model, freeze_epochs=freeze_epochs,
                              fine_tune_learning_rate=fine_tune_learning_rate, head_init=head_init)
    run_train(data_params, config, split_run_id=split_run_id or None, verbose=0 if quiet else None,
              transfer=transfer, outage_timeout=outage_timeout, run_id=run_id or None)


@cli.command()
@click.argument("run_id")
@click.option("--quiet", is_flag=True, help="No progress output from Keras.")
def reproduce(run_id, quiet):
    """Train a finished train run again from its record and compare every final metric.

    Same params, same split run (its rows checked by digest, its data source too), same seed;
    a changed code version is a warning. The new run is tagged fittrack.reproduces=RUN_ID.
    """
    from pipelines.steps.reproduce import format_table, reproduce as run_reproduce

    new_run_id, rows = run_reproduce(run_id, verbose=0 if quiet else None)
    click.echo(format_table(run_id, new_run_id, rows))


@cli.command()
@data_options
@click.option("--split-run-id", default="", help="Tune on this split run's parts; default: reuse a matching "
              "finished split, or make one.")
@click_options(TuneParams)
@click.option("--parent-run-id", default="", hidden=True)
@click.option("--worker-index", type=int, default=0, hidden=True)
@click.option("--trial-patience", type=click.IntRange(min=0), default=3, show_default=True,
              help="EarlyStopping inside each trial: the pruner compares trials, this stops a trial on its own "
                   "plateau.")
@train_options(exclude=("epochs", "monitor", "patience"))
def tune(split_run_id, parent_run_id, worker_index, trial_patience, quiet, **kwargs):
    """Search hyperparameters with Optuna; every trial is a nested, fully tracked training run."""
    from pipelines.steps.tune import run_tune

    data_params = _split_data_params(kwargs)
    params = take(TuneParams, kwargs)
    base = _train_config({**kwargs, "patience": trial_patience}, data_params.seed)
    run_tune(data_params, base, params, split_run_id=split_run_id, parent_run_id=parent_run_id,
             worker_index=worker_index, verbose=not quiet)


@cli.command()
@click.option("--metric", default=DEFAULT_METRIC, show_default=True,
              help="Validation metric that picks the best run (a train run's best epoch; a tune run's best trial).")
@click.option("--run-id", default="", help="Register this run's model (several, comma-separated: the best of them).")
@click.option("--study", default="", help="Register the best tune run of this Optuna study.")
@click.option("--experiment", default="", help="Pick the best train or tune run of this experiment "
              "(name or id; default: the current one).")
@click.option("--model-name", default="", help="Registered model name (default: from the data, e.g. digits).")
@click.option("--promote-without-comparison", type=click.BOOL, default=False, show_default=True,
              help="Make it champion even where no fair comparison exists (the champion was trained on other "
                   "data, or on most of these test rows).")
def register(metric, run_id, study, experiment, model_name, promote_without_comparison):
    """Register the best model; move the champion alias only if it wins on test rows neither model saw."""
    from pipelines.steps.register import run_register

    done = run_register(metric=metric, run_id=run_id, study=study, experiment=experiment, model_name=model_name,
                        promote_without_comparison=promote_without_comparison)
    click.echo(f"fittrack: models:/{done['name']}/{done['version']} "
               f"({'champion' if done['promoted'] else 'challenger'})")


@cli.command(name="main")
@data_options
@train_options
@click_options(PipelineParams)
@click.option("--env-manager", default="auto", show_default=True,
              help="Env manager for the nested steps (auto: the one this run was started with).")
def main_command(env_manager, quiet, **kwargs):
    """The whole pipeline: split and baselines (reused when they match), train, tune, register."""
    from pipelines.steps.main import run_main

    data_params = _split_data_params(kwargs)
    pipeline = take(PipelineParams, kwargs)
    done = run_main(data_params, _train_config(kwargs, data_params.seed), pipeline, env_manager=env_manager)
    click.echo(f"fittrack: models:/{done['model_name']}@champion is version {done['champion_version']} "
               f"(this run registered version {done['version']})")


cli.add_command(compare)
cli.add_command(server)


def main(argv=None) -> None:
    """Console entry point: errors become one line, and a run `mlflow run` opened is marked FAILED."""
    try:
        cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        _fail_mlflow_run(exc.format_message())
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("Aborted!", err=True)
        _fail_mlflow_run("aborted")
        sys.exit(1)


def _fail_mlflow_run(message: str) -> None:
    from tracking import entry

    run_id = entry.run_id()
    if run_id:
        from tracking.runs import fail_run

        fail_run(run_id, message)


if __name__ == "__main__":
    main()
