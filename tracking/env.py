"""Environment variables fittrack reads, each declared once (as mlflow/environment_variables.py does)."""

import os


class _EnvironmentVariable:
    def __init__(self, name: str, type_, default):
        self.name = name
        self.type = type_
        self.default = default

    def get(self):
        raw = os.environ.get(self.name)
        if raw is None or raw == "":
            return self.default
        if self.type is bool:
            return raw.strip().lower() in ("1", "true", "yes", "on")
        return self.type(raw)

    def __repr__(self):
        return self.name


#: Set by `mlflow run` for the entry point's process: the run to join.
MLFLOW_RUN_ID = _EnvironmentVariable("MLFLOW_RUN_ID", str, None)

#: Set by `mlflow run` for the entry point's process.
MLFLOW_EXPERIMENT_ID = _EnvironmentVariable("MLFLOW_EXPERIMENT_ID", str, None)

#: Where `main` looks for MLproject when it chains steps with `mlflow.run`.
FITTRACK_PROJECT_URI = _EnvironmentVariable("FITTRACK_PROJECT_URI", str, None)

#: Seconds a `register` run waits for earlier versions' promotion decisions before deciding alone.
FITTRACK_PROMOTION_TIMEOUT = _EnvironmentVariable("FITTRACK_PROMOTION_TIMEOUT", float, 300.0)

#: The admin password of the `team` tracking server's basic-auth (required there; never stored or logged).
FITTRACK_ADMIN_PASSWORD = _EnvironmentVariable("FITTRACK_ADMIN_PASSWORD", str, None)

#: Optuna storage URL for `tune` when --storage is empty: a URL with a password stays out of the
#: command line and of the params `mlflow run` logs for its -P values.
FITTRACK_OPTUNA_STORAGE = _EnvironmentVariable("FITTRACK_OPTUNA_STORAGE", str, "")
