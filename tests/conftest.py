"""Every test gets its own real MLflow tracking store (SQLite) and artifact folder.

Creating an MLflow database runs its migrations (a second or two), so one empty database is
made per session and copied for each test; each test's experiment keeps its artifacts in the
test's own temporary folder.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import uuid

import mlflow
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("store-template")
    path = folder / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(autouse=True)
def terminal_settings():
    """Every CLI command runs tracking.terminal.configure, which sets environment variables (inherited
    by the processes a test starts, `mlflow run` among them) and MLflow's log level for the process:
    each test starts from the session's settings, not from the last command's."""
    import logging

    from tracking import terminal

    saved = {name: os.environ.get(name) for name in (terminal.TF_LOG_LEVEL, terminal.MLFLOW_LOG_LEVEL)}
    level = logging.getLogger("mlflow").level
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    terminal._set_here.clear()
    logging.getLogger("mlflow").setLevel(level)


@pytest.fixture(autouse=True)
def tracking(tmp_path, empty_store, monkeypatch):
    """A fresh store and experiment for this test, and no run left open afterwards."""
    db = tmp_path / "mlflow.db"
    shutil.copyfile(empty_store, db)
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    from tracking import entry

    entry.claim()  # no entry run left over from an earlier test's `mlflow run`-like invocation
    mlflow.set_tracking_uri(uri)
    artifacts = tmp_path / "artifacts"
    experiment_id = mlflow.MlflowClient().create_experiment("test", artifact_location=artifacts.as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment_id)
    mlflow.set_experiment(experiment_id=experiment_id)
    monkeypatch.chdir(tmp_path)
    yield Tracking(uri=uri, experiment_id=experiment_id, folder=tmp_path)
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


class Tracking:
    def __init__(self, uri, experiment_id, folder):
        self.uri, self.experiment_id, self.folder = uri, experiment_id, folder

    @property
    def client(self):
        return mlflow.MlflowClient(tracking_uri=self.uri)

    def runs(self, step: str | None = None, status: str | None = None):
        clauses = []
        if step:
            clauses.append(f"tags.`fittrack.step` = '{step}'")
        if status:
            clauses.append(f"attributes.status = '{status}'")
        return self.client.search_runs([self.experiment_id], filter_string=" and ".join(clauses),
                                       order_by=["attributes.start_time ASC"])

    def only_run(self, step: str):
        found = self.runs(step)
        assert len(found) == 1, f"expected one {step} run, found {len(found)}"
        return found[0]


#: The PostgreSQL server the team and multi-worker tests use (trust auth on this machine and in CI).
POSTGRES = "postgresql://postgres@127.0.0.1:5432"


@pytest.fixture
def postgres_database():
    """A fresh PostgreSQL database for this test (its URL), dropped afterwards."""
    import psycopg

    name = f"fittrack_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(f"{POSTGRES}/postgres", autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not running at 127.0.0.1:5432: {exc}")
    admin.execute(f"CREATE DATABASE {name}")
    yield f"{POSTGRES}/{name}"
    admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now, for a server a test starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_run(*args, timeout=600):
    """The real `mlflow run` of this project, in this test's store."""
    command = [sys.executable, "-m", "mlflow", "run", PROJECT_ROOT, "--env-manager", "local", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)
