"""`fittrack compare`: a leaderboard of train and trial runs, beside the pipeline commands."""

from __future__ import annotations

import click

from tracking.compare import CompareParams
from tracking.fields import click_options, take


@click.command()
@click_options(CompareParams)
def compare(**kwargs):
    """Leaderboard of train and trial runs by a validation metric: params, best epoch, test score, diagnosis."""
    from tracking.compare import compare as compare_runs

    params = take(CompareParams, kwargs)
    text = compare_runs(params)
    if not params.output:
        click.echo(text, nl=False)
    for path in (params.output, params.plot):
        if path:
            click.echo(f"fittrack: wrote {path}", err=True)
