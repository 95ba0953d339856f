"""`fittrack compare`: a leaderboard of train and trial runs, beside the pipeline commands."""

from __future__ import annotations

import click

from pipelines.params import DEFAULT_METRIC


@click.command()
@click.option("--metric", default=DEFAULT_METRIC, show_default=True,
              help="Validation metric that ranks the runs by their best epoch (loss, mse, mae minimised; the rest "
                   "maximised), e.g. val_loss, val_accuracy, val_auc.")
@click.option("--experiment", default="", help="Compare this experiment's train and trial runs (name or id; "
              "default: the current one).")
@click.option("--study", default="", help="Only the trial runs of this Optuna study.")
@click.option("--filter", "filter_string", default="",
              help="MLflow search filter that narrows the runs, e.g. \"params.optimizer = 'adam'\".")
@click.option("--run-id", "run_ids", multiple=True, help="Compare these runs (repeatable); instead of the options "
              "above.")
@click.option("--format", "output_format", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True)
@click.option("--output", default="", help="Write the leaderboard to this file instead of standard output.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the best N runs.")
@click.option("--plot", default="", help="Also draw the runs' validation curves by epoch into this PNG file.")
def compare(metric, experiment, study, filter_string, run_ids, output_format, output, limit, plot):
    """Leaderboard of train and trial runs by a validation metric: params, best epoch, test score, diagnosis."""
    from tracking.compare import compare as compare_runs

    text = compare_runs(metric=metric, experiment=experiment, study=study, filter_string=filter_string,
                        run_ids=run_ids, output_format=output_format, output=output, limit=limit, plot=plot)
    if not output:
        click.echo(text, nl=False)
    for path in (output, plot):
        if path:
            click.echo(f"fittrack: wrote {path}", err=True)
