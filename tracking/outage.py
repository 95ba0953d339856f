"""Riding out a tracking server that goes away: MLflow's own HTTP retries, sized to a time budget,
and what a run keeps on local disk when the server never comes back.

MLflow's client already retries a failed request with exponential back-off (urllib3's Retry:
waits of 0, f, 2f, 4f, ... seconds, each at most 120), and fittrack logs epochs asynchronously,
so training goes on while the requests wait; a server back in time receives every epoch, and
none twice (the store keeps one row per metric, step, timestamp and value). Only the budget is
ours: the retries are set so that their waits add up to `outage_timeout` seconds.
"""

from __future__ import annotations

import os
import shutil

from tracking.errors import FittrackError

#: MLflow caps its retries at 10 (`_MLFLOW_HTTP_REQUEST_MAX_RETRIES_LIMIT`): with waits doubling
#: from 2 s to 120 s that is at most this many seconds.
MAX_OUTAGE_SECONDS = 600
_MAX_RETRIES = 10
_BACKOFF_MAX = 120.0
#: Where a run's model and checkpoints go when the server never came back.
UNSENT_DIR = "fittrack-unsent"


class TrackingServerUnavailable(FittrackError):
    """The tracking server did not answer within the outage budget."""


def backoff_waits(retries: int, factor: int) -> list[float]:
    """urllib3's waits before each retry: none before the first, then factor * 2**(n-1), capped."""
    return [0.0] + [min(_BACKOFF_MAX, factor * 2.0 ** n) for n in range(1, retries)]


def retry_settings(seconds: float) -> tuple[int, int]:
    """(max retries, backoff factor) whose waits add up to at least `seconds`."""
    if not 0 <= seconds <= MAX_OUTAGE_SECONDS:
        raise FittrackError(f"outage_timeout must be in [0, {MAX_OUTAGE_SECONDS}], got {seconds!r}")
    for factor in (1, 2):
        for retries in range(_MAX_RETRIES + 1):
            if sum(backoff_waits(retries, factor)) >= seconds:
                return retries, factor
    return _MAX_RETRIES, 2


def ride_out(seconds: float) -> None:
    """Let this process's MLflow requests to a tracking server retry for `seconds` before they fail."""
    import mlflow

    retries, factor = retry_settings(seconds)
    if not mlflow.get_tracking_uri().startswith(("http://", "https://")):
        return  # a local store has no outage to ride out
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(retries)
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = str(factor)


def give_up() -> None:
    """The server is gone: every later request (ending the run, say) fails at once, not after
    another full round of retries."""
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"


def is_unreachable(exc: BaseException) -> bool:
    """Whether an error, or one it was raised from, is the server not answering."""
    import requests
    import urllib3

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (requests.exceptions.ConnectionError, urllib3.exceptions.MaxRetryError,
                            ConnectionError)):
            return True
        text = str(exc)
        if "Max retries exceeded" in text or "Connection refused" in text:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def keep_locally(run_id: str, workdir: str, model=None) -> str:
    """Copy what the run produced (checkpoints, plots) and the trained model to
    ./fittrack-unsent/RUN_ID; return that folder's absolute path."""
    folder = os.path.abspath(os.path.join(UNSENT_DIR, run_id))
    os.makedirs(folder, exist_ok=True)
    if workdir and os.path.isdir(workdir):
        shutil.copytree(workdir, folder, dirs_exist_ok=True)
    if model is not None:
        model.save(os.path.join(folder, "model.keras"))
    return folder
