"""Starting, checking and stopping the MLflow tracking server (`mlflow server`) that fittrack runs log to.

Two profiles:

- `local`: SQLite backend and artifacts served from `./mlartifacts`, bound to loopback, no auth;
- `team`: PostgreSQL backend, served artifacts, several workers, MLflow's `basic-auth` app.

The server runs detached in its own session, so `start` returns and `stop` can end the whole
process group (`mlflow server` -> uvicorn -> workers). What `stop` and `status` need is kept in
`<state dir>/server.json`; secrets never go there: URLs are stored with their password masked,
the admin password only ever travels in the server's environment.
"""

from __future__ import annotations

import configparser
import dataclasses
import json
import os
import pathlib
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from tracking.errors import FittrackError
from tracking.fields import check_fields, param
from tracking import env
from tracking.redact import mask_uri

PROFILES = ("local", "team")
DEFAULT_PERMISSIONS = ("NO_PERMISSIONS", "READ")
STATE_DIR = ".fittrack"
STATE_FILE = "server.json"
LOG_FILE = "server.log"
AUTH_CONFIG_FILE = "basic_auth.ini"
AUTH_DATABASE_FILE = "basic_auth.db"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# MLflow's own floor for basic-auth passwords (mlflow.utils.validation._validate_password).
MIN_PASSWORD_LENGTH = 12

@dataclasses.dataclass
class ServerConfig:
    """`fittrack server start`'s parameters (its options are built from these fields)."""

    profile: str = param("local", "local: SQLite, ./mlartifacts, loopback, no auth. team: PostgreSQL, several "
                         "workers, basic-auth with the admin password from FITTRACK_ADMIN_PASSWORD.", choices=PROFILES)
    host: str = param("127.0.0.1", "Interface to bind (team only may use 0.0.0.0; set --allowed-hosts then).")
    port: int = param(5000, low=1, high=65535)
    backend_store_uri: str = param("", "local: default sqlite:///mlflow.db here. team: required, "
                                   "postgresql://USER@HOST/DB (or MLFLOW_BACKEND_STORE_URI).",
                                   envvar="MLFLOW_BACKEND_STORE_URI")
    artifacts_destination: str = param("mlartifacts", "Where the server stores the artifacts it serves (a folder or "
                                       "e.g. s3://bucket).")
    workers: int = param(0, "Server worker processes (0: 1 for local, 4, MLflow's default, for team).", low=0)
    allowed_hosts: str = param("", "Host headers the server answers, comma-separated (default: HOST:PORT, "
                               "localhost:PORT, 127.0.0.1:PORT).")
    cors_allowed_origins: str = param("", "Browser origins allowed to call the API (default: MLflow's, localhost "
                                      "origins).")
    admin_username: str = param("admin", "team: the basic-auth admin user.")
    default_permission: str = param("NO_PERMISSIONS", "team: what users may do on experiments and models nobody "
                                    "granted them.", choices=DEFAULT_PERMISSIONS)
    auth_database_uri: str = param("", "team: the basic-auth user database (default: SQLite in --state-dir).")
    state_dir: str = param(STATE_DIR, "Where start records the server (server.json), its log and auth files.")

    def __post_init__(self):
        check_fields(self)
        if self.profile == "local" and self.host not in LOOPBACK_HOSTS:
            # The local profile has no authentication: anyone who reaches the port could write runs.
            raise FittrackError(f"the local profile has no authentication and binds only to loopback, not "
                                f"{self.host!r}; use 127.0.0.1, or --profile team")

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"


def state_path(state_dir: str = STATE_DIR) -> pathlib.Path:
    return pathlib.Path(state_dir).resolve() / STATE_FILE


def read_state(state_dir: str = STATE_DIR) -> dict | None:
    try:
        return json.loads(state_path(state_dir).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise FittrackError(f"cannot read {state_path(state_dir)}: {exc}") from None


def start(config: ServerConfig, timeout: float = 120.0) -> dict:
    """Start `mlflow server` detached, wait until /health answers, and record it; returns the state."""
    state_dir = pathlib.Path(config.state_dir).resolve()
    running = read_state(config.state_dir)
    if running and _alive(running["pid"]):
        raise FittrackError(f"a server is already running at {running['url']} (pid {running['pid']}); "
                            f"run `fittrack server stop` first")
    backend = _backend_store_uri(config)
    artifacts = _artifacts_destination(config)
    workers = config.workers or (1 if config.profile == "local" else 4)
    _check_port_free(config.host, config.port)
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700)  # it holds the auth database and the server log

    server_env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": backend}
    # MLflow's job runner (GenAI scorers, trace archival) adds eight processes and seconds of
    # start-up that fittrack never uses; MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true brings it back.
    server_env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    # The backend URI goes through the environment, not argv: argv (with any password) is
    # world-readable in `ps` and /proc, the environment only to this user.
    command = [sys.executable, "-m", "mlflow", "server", "--host", config.host, "--port", str(config.port),
               "--workers", str(workers), "--serve-artifacts", "--artifacts-destination", artifacts,
               "--allowed-hosts", config.allowed_hosts or _default_allowed_hosts(config)]
    if config.cors_allowed_origins:
        command += ["--cors-allowed-origins", config.cors_allowed_origins]
    auth_config = None
    if config.profile == "team":
        auth_config = _write_auth_config(config, state_dir)
        command += ["--app-name", "basic-auth"]
        server_env.update(_auth_environment(auth_config))
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        server_env.pop(name, None)  # a client's settings, not the server's

    log_path = state_dir / LOG_FILE
    with open(log_path, "ab") as log:
        os.chmod(log_path, 0o600)
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   env=server_env, start_new_session=True)
    state = {"pid": process.pid, "url": config.url, "profile": config.profile, "host": config.host,
             "port": config.port, "workers": workers, "backend_store_uri": mask_uri(backend),
             "artifacts_destination": mask_uri(artifacts), "log": str(log_path),
             "auth_config": str(auth_config) if auth_config else None, "started_at": time.time()}
    try:
        _wait_until_healthy(config.url, process, log_path, timeout)
    except BaseException:
        _end_process_group(process.pid)
        raise
    path = state_dir / STATE_FILE
    path.write_text(json.dumps(state, indent=2) + "\n")
    os.chmod(path, 0o600)
    return state


def status(state_dir: str = STATE_DIR) -> dict:
    """What `start` recorded, with `running` (the process lives) and `healthy` (/health answers)."""
    state = read_state(state_dir)
    if state is None:
        return {"running": False, "healthy": False, "state_file": str(state_path(state_dir))}
    return {**state, "running": _alive(state["pid"]), "healthy": _healthy(state["url"]),
            "state_file": str(state_path(state_dir))}


def stop(state_dir: str = STATE_DIR, timeout: float = 30.0) -> dict | None:
    """End the server `start` started (its whole process group) and forget it; None if none was recorded."""
    state = read_state(state_dir)
    if state is None:
        return None
    was_running = _alive(state["pid"])
    if was_running:
        _end_process_group(state["pid"], timeout)
    state_path(state_dir).unlink(missing_ok=True)
    return {**state, "was_running": was_running}


def describe(state: dict) -> str:
    backend = state.get("backend_store_uri", "?")
    return (f"{state['url']} (pid {state['pid']}, profile {state['profile']}, backend {backend}, "
            f"artifacts {state.get('artifacts_destination', '?')}, log {state.get('log', '?')})")


def _backend_store_uri(config: ServerConfig) -> str:
    uri = config.backend_store_uri
    if config.profile == "local":
        return uri or f"sqlite:///{pathlib.Path('mlflow.db').resolve()}"
    if not uri:
        raise FittrackError("the team profile needs a PostgreSQL backend: --backend-store-uri "
                            "postgresql://USER@HOST/DB (or MLFLOW_BACKEND_STORE_URI)")
    if not uri.startswith(("postgresql://", "postgresql+psycopg://")):
        raise FittrackError(f"the team profile needs a PostgreSQL backend (postgresql://USER@HOST/DB), "
                            f"not {mask_uri(uri)!r}")
    _check_database(uri)
    return uri


def _check_database(uri: str) -> None:
    """Fail here with one line rather than in the server's log with a traceback."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect():
            pass
    except Exception as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FittrackError(f"cannot reach backend {mask_uri(uri)!r}: {mask_uri(reason)}") from None
    finally:
        engine.dispose()


def _artifacts_destination(config: ServerConfig) -> str:
    destination = config.artifacts_destination or "mlartifacts"
    if "://" in destination:
        return destination
    return str(pathlib.Path(destination).resolve())


def _default_allowed_hosts(config: ServerConfig) -> str:
    """Host headers the server answers (DNS rebinding protection): the bound name and loopback."""
    names = ["127.0.0.1", "localhost"]
    if config.host in ("0.0.0.0", "::"):
        names += [socket.gethostname(), socket.getfqdn()]
    elif config.host not in names:
        names.append(config.host)
    names = [f"[{n}]" if ":" in n else n for n in dict.fromkeys(names)]
    return ",".join(f"{name}:{config.port}" for name in names)


def _write_auth_config(config: ServerConfig, state_dir: pathlib.Path) -> pathlib.Path:
    """The ini MLflow's basic-auth reads (MLFLOW_AUTH_CONFIG_PATH); private, and without the admin password."""
    _admin_password()  # refuse before writing anything
    parser = configparser.ConfigParser()
    parser["mlflow"] = {
        "default_permission": config.default_permission,
        "database_uri": config.auth_database_uri or f"sqlite:///{state_dir / AUTH_DATABASE_FILE}",
        "admin_username": config.admin_username,
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        "grant_default_workspace_access": "false",
    }
    path = state_dir / AUTH_CONFIG_FILE
    # Created 0600 before anything is written: database_uri may carry a password.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        parser.write(f)
    return path


def _auth_environment(auth_config: pathlib.Path) -> dict:
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(auth_config),
        # MLflow creates the admin user from this on first start and ignores it afterwards.
        "MLFLOW_AUTH_ADMIN_PASSWORD": _admin_password(),
        # basic-auth's CSRF protection needs a key shared by all workers; one per start will do.
        "MLFLOW_FLASK_SERVER_SECRET_KEY": os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY") or secrets.token_hex(32),
    }


def _admin_password() -> str:
    password = env.FITTRACK_ADMIN_PASSWORD.get()
    name = env.FITTRACK_ADMIN_PASSWORD.name
    if not password:
        raise FittrackError(f"the team profile needs the admin password in {name}; it is not set")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise FittrackError(f"{name} is too short: MLflow's basic-auth wants at least "
                            f"{MIN_PASSWORD_LENGTH} characters")
    return password


def _check_port_free(host: str, port: int) -> None:
    # Otherwise another server's /health could answer for ours.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise FittrackError(f"cannot bind {host}:{port}: {exc.strerror or exc}") from None


def _healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def _wait_until_healthy(url: str, process: subprocess.Popen, log_path: pathlib.Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise FittrackError(f"mlflow server exited with code {process.returncode} during start-up: "
                                f"{_last_error(log_path)} (see {log_path})")
        if _healthy(url):
            return
        time.sleep(0.3)
    raise FittrackError(f"mlflow server did not answer {url}/health within {timeout:.0f} s (see {log_path})")


def _last_error(log_path: pathlib.Path) -> str:
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "Exception" in line]
    return mask_uri((errors or lines or ["no output"])[-1])[:500]


def _alive(pid: int) -> bool:
    """Whether the recorded server's process group still has a live process."""
    _reap(pid)
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap(pid: int) -> None:
    # A server started from this very process (tests, CliRunner) stays a zombie until reaped.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _end_process_group(pgid: int, timeout: float = 30.0) -> None:
    """SIGTERM to the group (uvicorn shuts its workers down), SIGKILL to whatever is left after `timeout`."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _alive(pgid):
                return
            time.sleep(0.2)
    if _alive(pgid):
        raise FittrackError(f"server process group {pgid} did not end")
