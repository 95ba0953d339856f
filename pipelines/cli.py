"""`fittrack`: the pipeline steps from the shell; MLproject's entry points call the same commands.

Heavy imports (MLflow, TensorFlow) happen inside the commands so that `--help` stays fast.
"""

from __future__ import annotations

import os
import sys
import warnings

import click

# Quieter logs without hiding anything a user needs: per-file artifact download bars say nothing
# about the run. TensorFlow's and MLflow's start-up lines: tracking.terminal, per command (--verbose).
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# Library notices that repeat on every run and ask nothing of the user.
for _message in (".*Integer columns in Python cannot represent missing values.*",
                 ".*is experimental.*", ".*experimental feature.*"):
    warnings.filterwarnings("ignore", message=_message)

from pipelines.compare_command import compare
from pipelines.errors import FittrackError
from pipelines.params import (DataParams, PipelineParams, RegisterParams, StepParams, TuneParams, click_options,
                              take)
from pipelines.transfer import TransferConfig
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


def verbose_option(f):
    """--verbose (pipelines.params.StepParams.verbose): set how much reaches the terminal before the
    command's body runs, and so before it imports TensorFlow (tracking.terminal)."""
    import functools

    @click_options(StepParams, only=("verbose",))
    @functools.wraps(f)
    def command(*args, verbose, **kwargs):
        from tracking import terminal

        terminal.configure(verbose)
        return f(*args, **kwargs)

    return command


def data_options(f):
    """The data parameters (pipelines.params.DataParams) as options."""
    return click_options(DataParams)(f)


def train_options(f=None, *, exclude: tuple = ()):
    """The training parameters (pipelines.train.TrainConfig) as options, and --quiet; `exclude` leaves
    out those a command defines its own way."""
    if f is None:
        return lambda g: train_options(g, exclude=exclude)
    from pipelines.train import TrainConfig

    f = click_options(StepParams, only=("quiet",))(f)
    return click_options(TrainConfig, exclude=exclude)(f)


def _train_config(kwargs: dict, seed: int, **changes):
    from pipelines.train import TrainConfig

    return take(TrainConfig, kwargs, seed=seed, **changes)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """fittrack: tracked, reproducible Keras training on MLflow.

    Every step is an MLflow run; `mlflow ui` shows every epoch, checkpoint and model.
    """
    from tracking import entry

    entry.claim()


@cli.command()
@data_options
@verbose_option
def split(**kwargs):
    """Split data into train, validation and test parts, logged as artifacts and dataset inputs."""
    from pipelines.steps.split import run_split

    run_id = run_split(take(DataParams, kwargs))
    click.echo(f"fittrack: split run {run_id}")


@cli.command()
@click_options(StepParams, only=("split_run_id",), required=("split_run_id",))
@click_options(DataParams, only=("seed",))
@verbose_option
def baselines(split_run_id, seed):
    """Fit scikit-learn baselines (dummy, linear, kernel SVM, gradient boosting) on a split, each logged as a model."""
    from pipelines.steps.baselines import run_baselines

    click.echo(f"fittrack: baselines run {run_baselines(split_run_id, seed)}")


@cli.command()
@data_options
@click_options(StepParams, only=("split_run_id",))
@train_options
@click_options(TransferConfig)
@click_options(StepParams, only=("outage_timeout", "run_id"))
@verbose_option
def train(**kwargs):
    """Train a Keras model, logging every epoch, the best checkpoint, test metrics and the model."""
    from pipelines.steps.train import run_train

    data_params = take(DataParams, kwargs)
    step = take(StepParams, kwargs)
    transfer = take(TransferConfig, kwargs)
    config = _train_config(kwargs, data_params.seed)
    run_train(data_params, config, split_run_id=step.split_run_id or None, verbose=0 if step.quiet else None,
              transfer=transfer, outage_timeout=step.outage_timeout, run_id=step.run_id or None)


@cli.command()
@click.argument("run_id")
@click_options(StepParams, only=("quiet",))
@verbose_option
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
@click_options(StepParams, only=("split_run_id",))
@click_options(TuneParams)
@train_options(exclude=("epochs", "monitor", "patience"))
@verbose_option
def tune(**kwargs):
    """Search hyperparameters with Optuna; every trial is a nested, fully tracked training run."""
    from pipelines.steps.tune import run_tune

    data_params = take(DataParams, kwargs)
    step = take(StepParams, kwargs)
    params = take(TuneParams, kwargs)
    base = _train_config(kwargs, data_params.seed, patience=params.trial_patience)
    run_tune(data_params, base, params, split_run_id=step.split_run_id, verbose=not step.quiet)


@cli.command()
@click_options(RegisterParams)
@verbose_option
def register(**kwargs):
    """Register the best model; move the champion alias only if it wins on test rows neither model saw."""
    from pipelines.steps.register import run_register

    done = run_register(take(RegisterParams, kwargs))
    click.echo(f"fittrack: models:/{done['name']}/{done['version']} "
               f"({'champion' if done['promoted'] else 'challenger'})")


@cli.command(name="main")
@data_options
@train_options
@click_options(PipelineParams)
@click_options(StepParams, only=("verbose",))
def main_command(**kwargs):
    """The whole pipeline: split and baselines (reused when they match), train, tune, register."""
    from tracking import terminal

    verbose = kwargs.pop("verbose")
    terminal.configure(verbose)
    from pipelines.steps.main import run_main

    data_params = take(DataParams, kwargs)
    kwargs.pop("quiet")
    pipeline = take(PipelineParams, kwargs)
    # It ends with its summary: each step's run, the champion against the best baseline, where to look.
    run_main(data_params, _train_config(kwargs, data_params.seed), pipeline, verbose=verbose)


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
