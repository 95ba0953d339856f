"""`fittrack server start|status|stop`: an MLflow tracking server for fittrack's runs."""

from __future__ import annotations

import sys

import click

from tracking.fields import click_options, take
from tracking.server import ServerConfig


@click.group()
def server():
    """Run an MLflow tracking server for fittrack's runs: start, status, stop."""


_state_dir_option = click_options(ServerConfig, only=("state_dir",))


@server.command(name="start")
@click_options(ServerConfig)
def server_start(**kwargs):
    """Start `mlflow server` in the background and wait until it answers."""
    from tracking.server import start

    state = start(take(ServerConfig, kwargs))
    click.echo(f"fittrack: tracking server running at {state['url']} (pid {state['pid']}, profile "
               f"{state['profile']}, backend {state['backend_store_uri']})")
    click.echo(f"export MLFLOW_TRACKING_URI={state['url']}")


@server.command(name="status")
@_state_dir_option
def server_status(state_dir):
    """Whether the server start started answers, and where it keeps runs (exit 1 if it does not answer)."""
    from tracking.server import describe, status

    state = status(state_dir)
    if "pid" not in state:
        click.echo(f"fittrack: no tracking server started here ({state['state_file']} does not exist)")
        sys.exit(1)
    if state["healthy"]:
        click.echo(f"fittrack: tracking server running at {describe(state)}")
        return
    condition = "not answering /health" if state["running"] else "not running (its process is gone)"
    click.echo(f"fittrack: tracking server {condition}: {describe(state)}")
    sys.exit(1)


@server.command(name="stop")
@_state_dir_option
def server_stop(state_dir):
    """Stop the server start started (its whole process group); nothing to stop is not an error."""
    from tracking.server import stop

    stopped = stop(state_dir)
    if stopped is None:
        click.echo("fittrack: no tracking server to stop")
    elif stopped["was_running"]:
        click.echo(f"fittrack: stopped the tracking server at {stopped['url']} (pid {stopped['pid']})")
    else:
        click.echo(f"fittrack: the tracking server at {stopped['url']} was not running (pid {stopped['pid']} "
                   f"gone); forgot it")
