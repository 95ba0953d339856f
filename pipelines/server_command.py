"""`fittrack server start|status|stop`: an MLflow tracking server for fittrack's runs."""

from __future__ import annotations

import sys

import click


@click.group()
def server():
    """Run an MLflow tracking server for fittrack's runs: start, status, stop."""


_state_dir_option = click.option("--state-dir", default=".fittrack", show_default=True,
                                 help="Where start records the server (server.json), its log and auth files.")


@server.command(name="start")
@click.option("--profile", type=click.Choice(["local", "team"]), default="local", show_default=True,
              help="local: SQLite, ./mlartifacts, loopback, no auth. team: PostgreSQL, several workers, "
                   "basic-auth with the admin password from FITTRACK_ADMIN_PASSWORD.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind (team only may use 0.0.0.0; set --allowed-hosts then).")
@click.option("--port", type=int, default=5000, show_default=True)
@click.option("--backend-store-uri", envvar="MLFLOW_BACKEND_STORE_URI", default="",
              help="local: default sqlite:///mlflow.db here. team: required, postgresql://USER@HOST/DB "
                   "(or MLFLOW_BACKEND_STORE_URI).")
@click.option("--artifacts-destination", default="mlartifacts", show_default=True,
              help="Where the server stores the artifacts it serves (a folder or e.g. s3://bucket).")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Server worker processes "
              "(default: 1 for local, 4 for team).")
@click.option("--allowed-hosts", default="", help="Host headers the server answers, comma-separated "
              "(default: HOST:PORT, localhost:PORT, 127.0.0.1:PORT).")
@click.option("--cors-allowed-origins", default="", help="Browser origins allowed to call the API "
              "(default: MLflow's, localhost origins).")
@click.option("--admin-username", default="admin", show_default=True, help="team: the basic-auth admin user.")
@click.option("--default-permission", type=click.Choice(["NO_PERMISSIONS", "READ"]), default="NO_PERMISSIONS",
              show_default=True, help="team: what users may do on experiments and models nobody granted them.")
@click.option("--auth-database-uri", default="", help="team: the basic-auth user database (default: SQLite in "
              "--state-dir).")
@_state_dir_option
def server_start(workers, **kwargs):
    """Start `mlflow server` in the background and wait until it answers."""
    from tracking.server import ServerConfig, start

    state = start(ServerConfig(workers=workers or 0, **kwargs))
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
