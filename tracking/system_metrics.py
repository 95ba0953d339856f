"""MLflow's system metrics (`system/*`: CPU, memory, disk, network; GPU utilisation and memory where
nvidia-ml-py finds an NVIDIA GPU) for a run, by its id, sampled in a thread of their own.

MLflow's fluent `start_run(log_system_metrics=True)` covers only the process's active run, takes its
interval from an environment variable, and drops the window it is sampling when the run ends: a run
shorter than one interval logs nothing. An Optuna trial is a run the fluent API does not own
(pipelines/tune.py makes it with MlflowClient) and lasts a few seconds, so fittrack starts MLflow's
own SystemMetricsMonitor for the run itself (`monitor`), with the interval as given, and when it
stops it publishes the window it was in, closed by one last sample: every monitored run holds at
least one sample at step 0, however short, and the last one describes its end.
"""

from __future__ import annotations

import contextlib
import logging

__all__ = ["SYSTEM_PREFIX", "Monitor", "monitor", "start"]

#: What MLflow puts before every system metric's name.
SYSTEM_PREFIX = "system/"
#: The longest `stop` waits for the sampling thread to end.
STOP_WAIT_SECONDS = 10.0

# "Started monitoring system metrics." and "Skip logging GPU metrics." at INFO for every trial say
# nothing a user needs; MLflow's warnings (a sample that could not be logged) still show.
logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)


class Monitor:
    """Samples the machine every `interval` seconds in a daemon thread and logs the samples to run
    `run_id` (steps 0, 1, 2, ...) until `stop`, which is safe to call again. With `enabled` false
    it does nothing, so callers need no branch."""

    def __init__(self, run_id: str, interval: float, enabled: bool = True):
        if not interval > 0:
            raise ValueError(f"interval must be above 0 seconds, got {interval!r}")
        self.run_id, self.interval, self.enabled = run_id, float(interval), enabled
        self._monitor = None

    def start(self) -> Monitor:
        if not self.enabled or self._monitor is not None:
            return self
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        # resume_logging: a run carried on (fittrack train --run-id) goes on from its last system step.
        monitor = SystemMetricsMonitor(self.run_id, sampling_interval=self.interval, samples_before_logging=1,
                                       resume_logging=True)
        # The parameter logged with the run is the interval used: MLflow would let
        # MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL (or ..._SAMPLES_BEFORE_LOGGING) override it.
        monitor.sampling_interval, monitor.samples_before_logging = self.interval, 1
        monitor.start()
        self._monitor = monitor
        return self

    @property
    def running(self) -> bool:
        thread = getattr(self._monitor, "_process", None)
        return thread is not None and thread.is_alive()

    def stop(self) -> None:
        """End the sampling thread, then log the window it was in with one last sample."""
        monitor, self._monitor = self._monitor, None
        if monitor is None:
            return
        thread = monitor._process
        monitor._shutdown_event.set()
        if thread is not None:
            # Woken from its wait, it reads the run's status once and ends. A tracking server that is
            # away holds that request for its retries: the run is not kept waiting for it, and the
            # thread (a daemon, told to stop) ends when the request does, its window unlogged.
            thread.join(STOP_WAIT_SECONDS)
            if thread.is_alive():
                return
        try:
            monitor.collect_metrics()
            monitor.publish_metrics(monitor.aggregate_metrics())
            monitor.mlflow_logger.flush()
        except Exception as exc:  # a store gone away must not fail the run for its system metrics
            logging.getLogger(__name__).warning(f"system metrics of run {self.run_id} not logged: {exc}")
        monitor._process = None


def start(run_id: str, enabled: bool, interval: float) -> Monitor:
    """A started Monitor for run `run_id` (one that does nothing when not `enabled`); `stop` it."""
    return Monitor(run_id, interval, enabled).start()


@contextlib.contextmanager
def monitor(run_id: str, enabled: bool, interval: float):
    """System metrics for run `run_id` while the block runs, stopped however it ends (an exception,
    Ctrl-C, a pruned trial)."""
    started = start(run_id, enabled, interval)
    try:
        yield started
    finally:
        started.stop()
