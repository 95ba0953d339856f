"""The run `mlflow run` made for this process, remembered before any run opens.

`mlflow run` hands the entry point its run in MLFLOW_RUN_ID, but mlflow.start_run() and
end_run() delete that variable: a step that first made (and ended) a split run of its own used to
lose it and do its work in a second top-level run. Read it once, at start (light: no MLflow import).
"""

from __future__ import annotations

from tracking import env

_run_id: str | None = None
_joined = False


def claim() -> str | None:
    """Remember this process's MLFLOW_RUN_ID; call at start, before any run opens."""
    global _run_id, _joined
    _run_id, _joined = env.MLFLOW_RUN_ID.get(), False
    return _run_id


def run_id() -> str | None:
    """The run `mlflow run` made for this process, or None when started by hand."""
    return _run_id or env.MLFLOW_RUN_ID.get()


def join() -> str | None:
    """The entry run, for the first top-level step run of the process; None after that (a new run)."""
    global _joined
    found = None if _joined else run_id()
    _joined = True
    return found
