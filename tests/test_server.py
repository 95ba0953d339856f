"""`fittrack server`: real `mlflow server` processes, real HTTP on 127.0.0.1, real PostgreSQL for `team`.

Starting a server takes seconds, so the local server is shared by the tests that only read or
write through it; each fixture stops its server (the whole process group) even when a test fails.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import subprocess
import sys
import uuid

import mlflow
import pytest

from tests.conftest import POSTGRES, PROJECT_ROOT, free_port
from tracking import server as tracking_server

ADMIN_PASSWORD = f"admin-{uuid.uuid4().hex}"
# trust auth ignores it, so it can stand for a real database password that must never leak
PG_PASSWORD = f"pg-{uuid.uuid4().hex}"
SENTINEL = f"outside-the-artifact-root-{uuid.uuid4().hex}"


def _fittrack(*args, cwd, env=None, timeout=300):
    clean = {k: v for k, v in os.environ.items()
             if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID")}
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**clean, "PYTHONPATH": PROJECT_ROOT, **(env or {})})


def _http(method, port, path, body=None, auth=None, headers=None):
    """One raw request: http.client sends the path as given (no `..` normalisation on our side)."""
    headers = dict(headers or {})
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    if isinstance(body, dict):
        body, headers["Content-Type"] = json.dumps(body), "application/json"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Server:
    def __init__(self, folder, state_dir, port, output):
        self.folder, self.state_dir, self.port, self.output = folder, state_dir, port, output
        self.url = f"http://127.0.0.1:{port}"

    @property
    def state(self):
        return json.loads((self.state_dir / "server.json").read_text())


def _stop(state_dir):
    try:
        tracking_server.stop(str(state_dir))
    except Exception:
        state = tracking_server.read_state(str(state_dir))
        if state:
            tracking_server._end_process_group(state["pid"], timeout=5)
        raise


@pytest.fixture(scope="module")
def local_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("local-server")
    state_dir, port = folder / ".fittrack", free_port()
    try:
        started = _fittrack("server", "start", "--port", str(port), "--state-dir", str(state_dir), cwd=folder)
        assert started.returncode == 0, started.stdout + started.stderr
        yield Server(folder, state_dir, port, started.stdout)
    finally:
        _stop(state_dir)


@pytest.fixture
def postgres_with_password(postgres_database):
    """The fresh database's URL with a password (trust auth ignores it): it must never show."""
    return postgres_database.replace("postgres@", f"postgres:{PG_PASSWORD}@", 1)


@pytest.mark.e2e
def test_local_server_starts_answers_and_stops(tmp_path):
    port, state_dir = free_port(), tmp_path / "state"
    args = ("--state-dir", str(state_dir))
    try:
        started = _fittrack("server", "start", "--port", str(port), *args, cwd=tmp_path)
        assert started.returncode == 0, started.stdout + started.stderr
        assert f"http://127.0.0.1:{port}" in started.stdout
        state = json.loads((state_dir / "server.json").read_text())
        assert _http("GET", port, "/health")[0] == 200

        status = _fittrack("server", "status", *args, cwd=tmp_path)
        assert status.returncode == 0 and "running at" in status.stdout
        assert f"backend sqlite:///{tmp_path / 'mlflow.db'}" in status.stdout

        again = _fittrack("server", "start", "--port", str(free_port()), *args, cwd=tmp_path)
        assert again.returncode != 0 and "already running" in again.stderr

        stopped = _fittrack("server", "stop", *args, cwd=tmp_path)
        assert stopped.returncode == 0 and f"pid {state['pid']}" in stopped.stdout
        with pytest.raises(ProcessLookupError):
            os.killpg(state["pid"], 0)  # the whole group is gone, uvicorn's worker included
        assert not (state_dir / "server.json").exists()
        with pytest.raises(OSError):
            _http("GET", port, "/health")

        after = _fittrack("server", "status", *args, cwd=tmp_path)
        assert after.returncode == 1 and "no tracking server" in after.stdout
        nothing = _fittrack("server", "stop", *args, cwd=tmp_path)
        assert nothing.returncode == 0 and "no tracking server to stop" in nothing.stdout
    finally:
        _stop(state_dir)


def test_local_server_binds_loopback_only(local_server):
    state = local_server.state
    assert state["host"] == "127.0.0.1" and state["url"] == local_server.url
    with open(f"/proc/{state['pid']}/cmdline", "rb") as f:
        argv = f.read().split(b"\0")
    assert argv[argv.index(b"--host") + 1] == b"127.0.0.1"
    assert argv[argv.index(b"--allowed-hosts") + 1].decode().split(",") == [
        f"127.0.0.1:{local_server.port}", f"localhost:{local_server.port}"]
    # A Host header that is not ours is refused (DNS rebinding protection).
    assert _http("GET", local_server.port, "/api/2.0/mlflow/experiments/search?max_results=1",
                 headers={"Host": "evil.example"})[0] == 403


def test_local_profile_refuses_a_public_interface(tmp_path):
    result = _fittrack("server", "start", "--host", "0.0.0.0", "--port", str(free_port()), cwd=tmp_path)
    assert result.returncode != 0 and "binds only to loopback, not '0.0.0.0'" in result.stderr
    assert not (tmp_path / ".fittrack" / "server.json").exists()


@pytest.mark.e2e
def test_train_logs_through_the_server_and_artifacts_land_in_its_destination(local_server, monkeypatch):
    result = _fittrack("train", "--data", "builtin:iris", "--epochs", "2", "--quiet", "--tensorboard", "false",
                       cwd=local_server.folder, env={"MLFLOW_TRACKING_URI": local_server.url})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    client = mlflow.MlflowClient(tracking_uri=local_server.url)
    runs = client.search_runs(["0"], "tags.`fittrack.step` = 'train'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run = runs[0]
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    stored = local_server.folder / "mlartifacts" / "0" / run.info.run_id / "artifacts"
    assert (stored / "checkpoints" / "best.keras").is_file()
    assert (stored / "network" / "MLmodel").is_file()
    assert not (local_server.folder / "mlruns").exists()

    monkeypatch.setenv("MLFLOW_TRACKING_URI", local_server.url)
    mlflow.set_tracking_uri(local_server.url)
    from sklearn.datasets import load_iris

    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    assert len(model.predict(load_iris(as_frame=True).data.iloc[:5])) == 5
    # MLflow 3 keeps a logged model's files under the experiment's models/, in the same destination.
    logged = local_server.folder / "mlartifacts" / "0" / "models" / model.metadata.model_id / "artifacts"
    assert (logged / "MLmodel").is_file()


@pytest.mark.e2e
def test_the_whole_pipeline_runs_against_the_server(local_server, tmp_path):
    """`mlflow run .` (split, baselines, train, tune, register) with MLFLOW_TRACKING_URI=http://..."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID")}
    done = subprocess.run(
        [sys.executable, "-m", "mlflow", "run", PROJECT_ROOT, "--env-manager", "local", "--experiment-name",
         "on-server", "-P", "data=builtin:iris", "-P", "epochs=3", "-P", "tune_trials=2", "-P", "tune_epochs=2",
         "-P", "tensorboard=false"],
        cwd=tmp_path, env={**env, "MLFLOW_TRACKING_URI": local_server.url}, capture_output=True, text=True,
        timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    client = mlflow.MlflowClient(tracking_uri=local_server.url)
    experiment = client.get_experiment_by_name("on-server")
    found = client.search_runs([experiment.experiment_id])
    by_step = {}
    for run in found:
        by_step.setdefault(run.data.tags.get("fittrack.step"), []).append(run)
    assert {"main", "split", "baselines", "baseline", "train", "tune", "trial", "register"} <= set(by_step)
    assert all(r.info.status == "FINISHED" for step, rs in by_step.items() if step != "trial" for r in rs)
    # Every step's artifacts went through the server into its destination, none to a local mlruns.
    split = by_step["split"][0]
    stored = local_server.folder / "mlartifacts" / experiment.experiment_id / split.info.run_id / "artifacts"
    assert (stored / "split" / "summary.json").is_file()
    assert not (tmp_path / "mlruns").exists()

    champion = client.get_model_version_by_alias("iris", "champion")
    assert champion.tags["source_run_id"] in {r.info.run_id for r in by_step["train"] + by_step["tune"]}
    mlflow.set_tracking_uri(local_server.url)
    from sklearn.datasets import load_iris

    model = mlflow.pyfunc.load_model("models:/iris@champion")
    assert len(model.predict(load_iris(as_frame=True).data.iloc[:5])) == 5


@pytest.fixture(scope="module")
def served_run(local_server):
    """A run with one artifact stored through the server, and a sentinel file just outside the artifact root."""
    (local_server.folder / "secret.txt").write_text(SENTINEL)
    (local_server.folder / "inside.txt").write_text("inside")
    client = mlflow.MlflowClient(tracking_uri=local_server.url)
    experiment_id = client.create_experiment(f"security-{uuid.uuid4().hex[:6]}")
    run_id = client.create_run(experiment_id).info.run_id
    client.log_artifact(run_id, str(local_server.folder / "inside.txt"))
    return run_id, experiment_id


def _assert_refused(status, body, where):
    assert 400 <= status < 500, f"{where}: {status} {body[:300]!r}"
    assert SENTINEL.encode() not in body and b"root:" not in body, where


_CLIMBS = ["../secret.txt", "%2e%2e%2fsecret.txt", "..%2fsecret.txt", "%2e%2e/secret.txt", "0/../../secret.txt",
           "0/..%2f..%2fsecret.txt", "%252e%252e%252fsecret.txt", "/etc/passwd", "%2Fetc%2Fpasswd",
           "%2F%2Fetc%2Fpasswd"]


@pytest.mark.parametrize("path", _CLIMBS)
def test_artifact_proxy_refuses_paths_out_of_the_root(local_server, served_run, path):
    base = "/api/2.0/mlflow-artifacts/artifacts/"
    _assert_refused(*_http("GET", local_server.port, base + path), f"GET {path}")
    written = path.replace("secret.txt", "pwned.txt").replace("passwd", f"pwned-{uuid.uuid4().hex[:6]}")
    _assert_refused(*_http("PUT", local_server.port, base + written, body=b"pwned",
                           headers={"Content-Type": "application/octet-stream"}), f"PUT {written}")
    listing = path.rsplit("secret.txt", 1)[0].rsplit("passwd", 1)[0] or ".."
    _assert_refused(*_http("GET", local_server.port, f"{base[:-1]}?path={listing}"), f"list {listing}")
    assert not (local_server.folder / "pwned.txt").exists() and not list(local_server.folder.glob("pwned*"))
    assert not list(local_server.folder.parent.glob("pwned*")) and not os.path.exists("/etc/pwned.txt")


@pytest.mark.parametrize("path", ["../secret.txt", "../../../../secret.txt", "../../../../../../../etc/passwd",
                                  "/etc/passwd", "%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fsecret.txt"])
def test_get_artifact_refuses_paths_out_of_the_run(local_server, served_run, path):
    run_id, _ = served_run
    assert _http("GET", local_server.port, f"/get-artifact?path=inside.txt&run_id={run_id}") == (200, b"inside")
    _assert_refused(*_http("GET", local_server.port, f"/get-artifact?path={path}&run_id={run_id}"), path)


def test_model_versions_cannot_point_out_of_the_artifact_store(local_server, served_run):
    run_id, experiment_id = served_run
    port, folder = local_server.port, local_server.folder
    name = f"m-{uuid.uuid4().hex[:6]}"
    assert _http("POST", port, "/api/2.0/mlflow/registered-models/create", {"name": name})[0] == 200
    run_root = folder / "mlartifacts" / experiment_id / run_id / "artifacts"
    for source in ["/etc", "file:///etc", str(folder), folder.as_uri(), "../../..", f"{run_root}/../../../..",
                   f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts/../../..", "mlflow-artifacts:///etc",
                   f"runs:/{run_id}/../../../..", f"{local_server.url}/api/2.0/mlflow-artifacts/artifacts/../.."]:
        for payload in ({"name": name, "source": source}, {"name": name, "source": source, "run_id": run_id}):
            status, body = _http("POST", port, "/api/2.0/mlflow/model-versions/create", payload)
            assert 400 <= status < 500, f"model version from {source!r} ({payload}) was accepted: {body[:300]!r}"

    # A legitimate version: downloads stay inside its source.
    good = {"name": name, "source": f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts", "run_id": run_id}
    status, body = _http("POST", port, "/api/2.0/mlflow/model-versions/create", good)
    assert status == 200, body
    version = json.loads(body)["model_version"]["version"]
    get = f"/model-versions/get-artifact?name={name}&version={version}&path="
    assert _http("GET", port, get + "inside.txt") == (200, b"inside")
    for path in ["../secret.txt", "../../../../secret.txt", "/etc/passwd", "..%2f..%2f..%2f..%2fsecret.txt"]:
        _assert_refused(*_http("GET", port, get + path), f"model version artifact {path}")


def test_team_profile_refuses_to_start_without_the_admin_password(tmp_path, monkeypatch):
    monkeypatch.delenv("FITTRACK_ADMIN_PASSWORD", raising=False)
    result = _fittrack("server", "start", "--profile", "team", "--backend-store-uri", f"{POSTGRES}/postgres",
                       "--port", str(free_port()), cwd=tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0 and len(errors) == 1, result.stderr
    assert "FITTRACK_ADMIN_PASSWORD" in errors[0] and "Traceback" not in result.stderr
    assert not (tmp_path / ".fittrack" / "server.json").exists()

    no_backend = _fittrack("server", "start", "--profile", "team", cwd=tmp_path,
                           env={"FITTRACK_ADMIN_PASSWORD": ADMIN_PASSWORD})
    assert no_backend.returncode != 0 and "needs a PostgreSQL backend" in no_backend.stderr
    sqlite = _fittrack("server", "start", "--profile", "team", "--backend-store-uri", "sqlite:///x.db", cwd=tmp_path,
                       env={"FITTRACK_ADMIN_PASSWORD": ADMIN_PASSWORD})
    assert sqlite.returncode != 0 and "not 'sqlite:///x.db'" in sqlite.stderr


@pytest.mark.e2e
def test_team_server_authenticates_and_enforces_permissions(tmp_path, postgres_with_password):
    port, state_dir = free_port(), tmp_path / "state"
    args = ("--state-dir", str(state_dir))
    admin, reader = ("admin", ADMIN_PASSWORD), ("reader", f"reader-{uuid.uuid4().hex}")
    try:
        started = _fittrack("server", "start", "--profile", "team", "--backend-store-uri", postgres_with_password,
                            "--workers", "2", "--port", str(port), *args, cwd=tmp_path,
                            env={"FITTRACK_ADMIN_PASSWORD": ADMIN_PASSWORD})
        assert started.returncode == 0, started.stdout + started.stderr
        status = _fittrack("server", "status", *args, cwd=tmp_path)
        assert status.returncode == 0 and "postgresql://postgres:***@127.0.0.1:5432/" in status.stdout

        assert _http("GET", port, "/api/2.0/mlflow/experiments/search?max_results=5")[0] == 401
        assert _http("GET", port, "/api/2.0/mlflow/experiments/search?max_results=5", auth=("admin", "wrong"))[0] == 401

        created = _http("POST", port, "/api/2.0/mlflow/experiments/create", {"name": "team"}, auth=admin)
        assert created[0] == 200, created
        experiment_id = json.loads(created[1])["experiment_id"]
        assert _http("POST", port, "/api/2.0/mlflow/users/create",
                     {"username": reader[0], "password": reader[1]}, auth=admin)[0] == 200
        granted = _http("POST", port, "/api/3.0/mlflow/users/permissions/grant",
                        {"username": reader[0], "resource_type": "experiment", "resource_id": experiment_id,
                         "permission": "READ"}, auth=admin)
        assert granted[0] == 200, granted

        run = _http("POST", port, "/api/2.0/mlflow/runs/create", {"experiment_id": experiment_id}, auth=admin)
        assert run[0] == 200, run
        run_id = json.loads(run[1])["run"]["info"]["run_id"]
        metric = {"run_id": run_id, "key": "val_loss", "value": 0.5, "timestamp": 0, "step": 0}
        assert _http("POST", port, "/api/2.0/mlflow/runs/log-metric", metric, auth=admin)[0] == 200

        # The reader reads, but writes nothing.
        assert _http("GET", port, f"/api/2.0/mlflow/experiments/get?experiment_id={experiment_id}", auth=reader)[0] == 200
        assert _http("GET", port, f"/api/2.0/mlflow/runs/get?run_id={run_id}", auth=reader)[0] == 200
        assert _http("POST", port, "/api/2.0/mlflow/runs/log-metric", {**metric, "value": 9.0}, auth=reader)[0] == 403
        assert _http("POST", port, "/api/2.0/mlflow/runs/create", {"experiment_id": experiment_id},
                     auth=reader)[0] == 403
        assert _http("POST", port, "/api/2.0/mlflow/users/create", {"username": "mallory", "password": "x" * 16},
                     auth=reader)[0] == 403
        history = _http("GET", port, f"/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key=val_loss",
                        auth=admin)
        assert [m["value"] for m in json.loads(history[1])["metrics"]] == [0.5]

        # Neither secret is written anywhere the server or fittrack keeps things, nor printed.
        state_text = (state_dir / "server.json").read_text()
        log_text = (state_dir / "server.log").read_text()
        for secret in (ADMIN_PASSWORD, PG_PASSWORD):
            assert secret not in state_text and secret not in log_text
            assert secret not in started.stdout + started.stderr + status.stdout + status.stderr
            for path in state_dir.iterdir():
                if path.suffix in (".ini", ".json", ".log"):
                    assert secret not in path.read_text(), path
        assert oct((state_dir / "basic_auth.ini").stat().st_mode & 0o777) == "0o600"
        with open(f"/proc/{json.loads(state_text)['pid']}/cmdline", "rb") as f:
            assert PG_PASSWORD.encode() not in f.read()  # argv is world-readable
    finally:
        _stop(state_dir)
