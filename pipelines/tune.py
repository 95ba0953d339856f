"""Optuna pieces of the tune step: sampler, pruner, storage, and the objective over tracked trials."""

from __future__ import annotations

import os
from dataclasses import replace

from mlflow import MlflowClient

from pipelines import graph_memory
from pipelines import train as training
from pipelines.errors import FittrackError
from pipelines.params import DIRECTIONS, PRUNERS, SAMPLERS
from tracking.epochs import FIRST_EPOCH, epoch_number
from tracking.metric_names import metric_names, mode_of
from tracking import runs, system_metrics
from tracking.features import feature_params
from tracking.redact import mask_uri

TRIAL_STEP = "trial"
RUN_ID_ATTR = "mlflow_run_id"
#: A retried trial's user attributes: the run and the trial number it tries again.
RETRY_OF_RUN_ATTR, RETRY_OF_TRIAL_ATTR = "retry_of_run_id", "retry_of_trial"
RETRY_OF_TAG = "fittrack.retry_of"


def check_metric(metric: str, task: str) -> None:
    known = {f"val_{m}" for kind in ("classification", "regression") for m in metric_names(kind)}
    logged = [f"val_{m}" for m in metric_names(task)]
    if metric not in known:
        raise FittrackError(f"unknown metric {metric!r}; choose a validation metric: {', '.join(logged)}")
    if metric not in logged:
        raise FittrackError(f"metric {metric!r} is not logged for {task}; choose one of {', '.join(logged)}")


def direction_for(metric: str, direction: str) -> str:
    if direction not in DIRECTIONS:
        raise FittrackError(f"unknown direction {direction!r}; choose one of {', '.join(DIRECTIONS)}")
    if direction != "auto":
        return direction
    return "maximize" if mode_of(metric) == "max" else "minimize"


def make_sampler(name: str, seed: int):
    import optuna

    if name == "tpe":
        import warnings

        # multivariate: the parameters' joint distribution (learning rate and batch size interact);
        # Optuna 5 already does so for one objective, said here so that it stays so. group: trials
        # whose parameters differ are modelled per subspace instead of falling back to independent
        # sampling; the default spaces name the same parameters in every trial, where it changes
        # nothing. group is marked experimental in Optuna 5, hence the warning filter.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        # CMA-ES covers numeric ranges; choices fall back to independent (random) sampling.
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "gp":
        try:
            import torch  # noqa: F401  (GPSampler needs it)
        except ImportError:
            raise FittrackError("sampler 'gp' needs PyTorch: pip install torch (or choose tpe, random, cmaes)") from None
        return optuna.samplers.GPSampler(seed=seed)
    raise FittrackError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


#: The epochs a trial has trained when Hyperband and successive halving first judge it.
MIN_RESOURCE = 3


def make_pruner(name: str, epochs: int):
    import optuna

    if name == "median":
        # Three trials run to the end to set the median; after that a trial is judged from its second
        # epoch on (the first is mostly initialisation noise). Measured in benchmarks/hpo_efficiency.py.
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=min(FIRST_EPOCH + 1, epochs))
    # A trial's step is its epoch's number (tracking.epochs), so the resource is the epochs trained:
    # Hyperband and successive halving first judge a trial after first_rung epochs, then after 3x
    # that many, each time against the trials that reached the same epoch; a trial of few epochs is
    # judged before its last one.
    first_rung = min(MIN_RESOURCE, max(epochs - 1, 1))
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=first_rung, max_resource=epochs, reduction_factor=3)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=first_rung, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise FittrackError(f"unknown pruner {name!r}; choose one of {', '.join(PRUNERS)}")


def make_storage(url: str, heartbeat_interval: int, grace_period: int, on_stale=None):
    """An RDB storage with heartbeats, so a dead worker's trial is failed (and retried) by another."""
    import sqlalchemy.exc
    from optuna.storages import RDBStorage

    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                          grace_period=grace_period, heartbeat_stale_trial_callback=on_stale)
    except sqlalchemy.exc.ArgumentError:
        raise FittrackError(f"storage {mask_uri(url)!r} is not a database URL (e.g. sqlite:///optuna.db, "
                            f"postgresql://user@host/db)") from None
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise FittrackError(f"cannot reach storage {mask_uri(url)!r}: {reason}") from None
    except ImportError as exc:
        raise FittrackError(f"storage {mask_uri(url)!r} needs a database driver that is not installed "
                            f"({exc.__cause__ or exc})") from None


def retry_trial(max_retries: int):
    """Optuna's own retry (RetryHeartbeatStaleTrialCallback: the failed trial's parameters as a new
    waiting trial, the retry history in its system attributes, at most `max_retries` per trial),
    except that the new trial names the run and trial it retries instead of inheriting the failed
    one's user attributes (its run id among them: each retry is a run of its own)."""
    import copy

    from optuna.storages import RetryHeartbeatStaleTrialCallback

    retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retries)

    def again(study, trial):
        named = copy.copy(trial)
        named.user_attrs = {RETRY_OF_RUN_ATTR: trial.user_attrs.get(RUN_ID_ATTR, ""), RETRY_OF_TRIAL_ATTR: trial.number}
        retry(study, named)

    return again


def retry_failed_callback(max_retries: int):
    """A study.optimize callback: a trial of this process that raised is retried."""
    from optuna.trial import TrialState

    retry = retry_trial(max_retries)

    def on_end(study, trial):
        if trial.state == TrialState.FAIL:
            retry(study, trial)

    return on_end


def stale_trial_callback(max_retries: int):
    """Called by whichever worker notices a dead worker's trial: end its MLflow run FAILED, retry it."""
    retry = retry_trial(max_retries)

    def on_stale(study, trial):
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if run_id:
            runs.fail_run(run_id, f"worker stopped sending heartbeats; trial {trial.number} failed by another worker")
            MlflowClient().set_tag(run_id, "optuna.state", "FAIL")
        retry(study, trial)

    return on_stale


def check_space(space: dict, base: training.TrainConfig, task: str, kind: str) -> None:
    """Every fixed value, choice and range end must make a valid configuration."""
    from pipelines.search_space import Choice, Fixed, Range

    for name, spec in space.items():
        values = (spec.value,) if isinstance(spec, Fixed) else spec.choices if isinstance(spec, Choice) else (
            (spec.low, spec.high) if isinstance(spec, Range) else ())
        for value in values:
            try:
                candidate = replace(base, **{name: value})
                candidate.check_task(task)
                training.resolve_model(candidate, kind)
            except FittrackError as exc:
                raise FittrackError(f"search space: {name}={value!r} is not usable: {exc}") from None


def default_trial(space: dict, base: training.TrainConfig) -> dict:
    """The base configuration's value of each searched parameter that its range or choices hold:
    enqueued as a new study's first trial, so the search starts from the default and never below it.
    A value the space leaves out (l2 0 under a log range from 1e-7) is sampled instead."""
    return {name: getattr(base, name) for name, spec in space.items() if spec.can_enqueue(getattr(base, name))}


class Objective:
    """One Optuna trial = one nested MLflow run holding what a training run holds (but no test)."""

    def __init__(self, base: training.TrainConfig, space: dict, prepared, metric: str, parent_run_id: str,
                 experiment_id: str, study_name: str, split_run_id: str, kind: str, workdir: str):
        self.base, self.space, self.prepared, self.metric = base, space, prepared, metric
        self.parent_run_id, self.experiment_id, self.study_name = parent_run_id, experiment_id, study_name
        self.split_run_id, self.kind, self.workdir = split_run_id, kind, workdir
        self.client = MlflowClient()
        self.gradients_before = graph_memory.custom_gradients()
        graph_memory.freeze_long_lived()

    def __call__(self, trial):
        import keras
        import optuna
        from optuna_integration import KerasPruningCallback

        class Pruning(KerasPruningCallback):
            """Reports each epoch at its number, the step its MLflow metrics have."""
            last_epoch = None

            def on_epoch_end(self, epoch, logs=None):
                self.last_epoch = epoch_number(epoch)
                super().on_epoch_end(self.last_epoch, logs)

        params = {name: spec.suggest(trial, name) for name, spec in self.space.items()}
        config = replace(self.base, **params, monitor=self.metric)
        config.resolved_model = training.resolve_model(config, self.kind)
        tags = {
            "mlflow.parentRunId": self.parent_run_id, runs.STEP_TAG: TRIAL_STEP,
            runs.CODE_VERSION_TAG: runs.code_version(), "optuna.study_name": self.study_name,
            "optuna.trial_number": str(trial.number), "optuna.state": "RUNNING",
            "fittrack.split_run_id": self.split_run_id,
        }
        if RETRY_OF_TRIAL_ATTR in trial.user_attrs:
            tags.update({RETRY_OF_TAG: trial.user_attrs[RETRY_OF_RUN_ATTR],
                         "optuna.retry_of_trial": str(trial.user_attrs[RETRY_OF_TRIAL_ATTR])})
        run = self.client.create_run(self.experiment_id, run_name=f"trial-{trial.number}", tags=tags)
        run_id = run.info.run_id
        trial.set_user_attr(RUN_ID_ATTR, run_id)
        trial.set_user_attr("pid", os.getpid())
        _log_params(self.client, run_id, {**config.params(), "resolved_model": config.resolved_model,
                                          **feature_params(self.prepared.meta),
                                          "split_run_id": self.split_run_id, "trial_number": trial.number})
        # A blank Keras state per trial; the earlier trials' graphs go with the collection that
        # clear_session runs, once TensorFlow's registry no longer holds them (graph_memory).
        graph_memory.drop_custom_gradients(keep=self.gradients_before)
        keras.backend.clear_session()
        keras.utils.set_random_seed(self.base.seed + trial.number)
        from pipelines.tracked_fit import fit_tracked

        workdir = os.path.join(self.workdir, f"trial-{trial.number}-{os.getpid()}")
        os.makedirs(workdir, exist_ok=True)
        pruning = Pruning(trial, self.metric)
        monitor = system_metrics.start(run_id, config.system_metrics, config.system_metrics_interval)
        try:
            # The best epoch's checkpoint written once, at the end, from memory: a pruned trial keeps
            # its params and epochs but no checkpoint (no trial needs one that the study gave up on).
            outcome = fit_tracked(config, self.prepared, run_id, workdir, verbose=0, extra_callbacks=(pruning,),
                                  checkpoint_each_best=False)
        except optuna.TrialPruned:
            self.client.set_tag(run_id, "pruned", "true")
            self.client.set_tag(run_id, "pruned_epoch", str(pruning.last_epoch))
            trial.set_user_attr("epochs_run", pruning.last_epoch)
            self.client.set_tag(run_id, "optuna.state", "PRUNED")
            self.client.set_terminated(run_id, "KILLED")
            raise
        except (Exception, KeyboardInterrupt) as exc:
            # Optuna fails the trial on either; its run ends with it (KILLED when interrupted).
            interrupted = isinstance(exc, KeyboardInterrupt)
            reason = "interrupted" if interrupted else f"{type(exc).__name__}: {exc}".splitlines()[0][:5000]
            self.client.set_tag(run_id, runs.ERROR_TAG, reason)
            self.client.set_tag(run_id, "optuna.state", "FAIL")
            self.client.set_terminated(run_id, "KILLED" if interrupted else "FAILED")
            raise
        finally:
            monitor.stop()  # however the trial ends: complete, pruned, failed or interrupted
        value = outcome.best_value if outcome.best_value is not None else float("nan")
        runs.log_artifact_bytes(run_id, self.client)
        self.client.set_tag(run_id, "optuna.state", "COMPLETE")
        self.client.set_terminated(run_id, "FINISHED")
        trial.set_user_attr("best_epoch", outcome.best_epoch)
        trial.set_user_attr("epochs_run", len(outcome.history["loss"]))
        return value


def _log_params(client, run_id: str, params: dict) -> None:
    from mlflow.entities import Param

    client.log_batch(run_id, params=[Param(k, runs.param_string(v)) for k, v in params.items()])

