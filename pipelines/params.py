"""Every step's parameters, each defined once: its default, type, range, choices and help.

The dataclasses here (and pipelines.train.TrainConfig, pipelines.transfer.TransferConfig) are the
one source: each checks its fields in its constructor (tracking.fields.check_fields), the click
options of pipelines/cli.py are built from their fields (`click_options`), and MLproject and the
README's list are written from those options (pipelines/mlproject.py). Importing this module stays
light (no MLflow, no TensorFlow): `fittrack --help` builds its options from it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tracking.errors import FittrackError
from tracking.metric_names import DEFAULT_METRIC
from tracking.fields import check_fields, click_options, param, param_like, take
from tracking.outage import MAX_OUTAGE_SECONDS

__all__ = ["DEFAULT_METRIC", "DataParams", "PipelineParams", "RegisterParams", "StepParams", "TuneParams",
           "click_options", "param", "param_like", "take"]

BUILTINS = ("digits", "breast_cancer", "wine", "iris", "diabetes")
TASKS = ("auto", "classification", "regression")
# What becomes of a column of numbers holding a few strings (`abc`, `n/a?`): `numeric` makes the
# strings missing values, `categorical` keeps every value as a category, `error` stops.
MIXED_COLUMNS = ("numeric", "categorical", "error")
SAMPLERS = ("tpe", "random", "cmaes", "gp")
PRUNERS = ("median", "hyperband", "successive_halving", "none")
DIRECTIONS = ("auto", "minimize", "maximize")
ENV_MANAGERS = ("auto", "local", "virtualenv", "uv", "conda")


def _validation_metric(name: str, value: str) -> None:
    if not value.startswith("val_"):
        raise FittrackError(f"{name} must be a validation metric (val_*), got {value!r}")


@dataclass
class DataParams:
    """The parameters every step that reads the data understands."""

    data: str = param("builtin:digits", f"builtin:{'|'.join(BUILTINS)}, or a .csv, .parquet or .npz file.")
    target: str = param("target", "Target column of a CSV/Parquet file (NPZ files use arrays x and y).")
    task: str = param("auto", "auto infers it from the target.", choices=TASKS)
    val_fraction: float = param(0.15, "Share of rows for validation (early stopping, checkpoints, tuning).",
                                low=0, high=1, low_open=True, high_open=True)
    test_fraction: float = param(0.2, "Share of rows held out for the one final test.", low=0, high=1,
                                 low_open=True, high_open=True)
    seed: int = param(42, "Seeds the split, the weights and the shuffling: same seed, same metrics.")
    mixed_columns: str = param("numeric", "A column of numbers holding a few strings (abc, n/a?): numeric makes "
                               "them missing values, categorical keeps every value as a category, error stops.",
                               choices=MIXED_COLUMNS)

    def __post_init__(self):
        check_fields(self)
        self.split_config  # checks what the fractions leave for training

    @property
    def split_config(self):
        from pipelines.split import SplitConfig

        return SplitConfig(val_fraction=self.val_fraction, test_fraction=self.test_fraction, seed=self.seed)

    def load(self):
        """The data source as these parameters read it (a pipelines.data.Dataset)."""
        from pipelines import data as data_sources

        return data_sources.load(self.data, self.target, self.task, self.mixed_columns)

    def match_params(self) -> dict:
        # The path itself is not matched: the data digest says whether the rows are the same.
        return {k: v for k, v in asdict(self).items() if k != "data"}


@dataclass
class StepParams:
    """How a step finds the runs it builds on, and how much it prints: not part of a run's record."""

    split_run_id: str = param("", "Use this split run's parts; default: reuse a matching finished split, or make "
                              "one.")
    run_id: str = param("", "Go on with this train run after a crash: training resumes from its last epoch (kept "
                        "in ./.fittrack/resume), its metric history continuous.")
    outage_timeout: float = param(300.0, "Seconds a tracking server may be away (requests retried, training goes "
                                  "on) before the run stops with its model and checkpoints kept in "
                                  "./fittrack-unsent.", low=0, high=MAX_OUTAGE_SECONDS)
    quiet: bool = param(False, "No progress output from Keras.", flag=True)
    verbose: bool = param(False, "Let TensorFlow's start-up and C++ log lines and MLflow's INFO lines through (they "
                          "are held back by default); main passes it to its steps.", switch=True)

    def __post_init__(self):
        check_fields(self)


@dataclass
class TuneParams:
    """The Optuna study's parameters (the trials' training parameters are a TrainConfig)."""

    n_trials: int = param(20, "Finished (complete or pruned) trials the study should reach, over all workers.",
                          low=1)
    timeout: float = param(0.0, "Stop starting trials after this many seconds (0: no limit).", low=0)
    metric: str = param(DEFAULT_METRIC, "Validation metric to optimise, e.g. val_loss, val_accuracy, val_auc, "
                        "val_r2_score.")
    direction: str = param("auto", "auto: from the metric (loss, mse, mae minimised; the rest maximised).",
                           choices=DIRECTIONS)
    sampler: str = param("tpe", "gp needs torch.", choices=SAMPLERS)
    pruner: str = param("median", choices=PRUNERS)
    study: str = param("", "Study name (default: DATA-MODEL-SPLIT, e.g. digits-cnn-1a2b3c4d: one study per "
                       "split); the same name resumes the study.")
    storage: str = param("", "Optuna storage URL, e.g. postgresql://user@host/db (default: "
                         "$FITTRACK_OPTUNA_STORAGE, else optuna.db beside the MLflow SQLite store). Put a URL with "
                         "a password in FITTRACK_OPTUNA_STORAGE: `mlflow run` logs -P values as params.")
    workers: int = param(1, "Local processes sharing the study.", low=1)
    trial_epochs: int = param(15, "The most epochs a trial may run.", low=1)
    # Tune's own name for train's patience: the pruner compares trials, this stops one on its own plateau.
    # Above reduce_lr_patience (4), so that a trial may halve its learning rate before it stops. With 3,
    # the enqueued train configuration stopped at epoch 7 on a noisy validation accuracy and was still
    # the best trial (digits, 30 trials x 15 epochs, split seed 42: best val 0.9926 -> 1.0000, its test
    # 0.9554 -> 0.9916, 123 -> 194 epochs; seed 1: 0.9963 both, 118 -> 134 epochs; hpo_efficiency.py).
    trial_patience: int = param(6, "EarlyStopping inside each trial: the pruner compares trials, this stops a "
                                "trial on its own plateau.", low=0)
    search_space: str = param("", "YAML file overriding the default search space.")
    heartbeat_interval: int = param(10, "Seconds between a running trial's heartbeats.", low=1)
    # One retry: a transient failure (memory taken by another process, a lost connection) gets a second
    # go; a trial that fails for its parameters costs one more attempt, at the same parameters.
    max_retries: int = param(1, "Times a failed trial's parameters are tried again, each a new trial and run "
                             "tagged fittrack.retry_of (0: never). A worker's trial lost with it counts as "
                             "failed.", low=0)
    grace_period: int = param(30, "Seconds without heartbeat after which another worker fails (and retries) "
                              "a trial.", low=2)
    # How `fittrack tune --workers N` starts its extra workers: internal, not for users.
    parent_run_id: str = param("", hidden=True)
    worker_index: int = param(0, hidden=True, low=0)

    def __post_init__(self):
        check_fields(self)
        _validation_metric("metric", self.metric)
        if self.grace_period <= self.heartbeat_interval:
            raise FittrackError(f"grace_period must be above heartbeat_interval ({self.heartbeat_interval}), got "
                                f"{self.grace_period!r}")


@dataclass
class RegisterParams:
    """Which run's model to register, and when it may become the champion."""

    metric: str = param(DEFAULT_METRIC, "Validation metric that picks the best run (a train run's best epoch; a "
                        "tune run's best trial; a baseline's final score).")
    run_id: str = param("", "Register this run's model (several, comma-separated: the best of them).")
    study: str = param("", "Register the best tune run of this Optuna study.")
    experiment: str = param("", "Pick the best train or tune run of this experiment (name or id; default: the "
                            "current one).")
    model_name: str = param("", "Registered model name (default: from the data, e.g. digits).")
    promote_without_comparison: bool = param(False, "Make it champion even where no fair comparison exists (the "
                                             "champion was trained on other data, or on most of these test rows).")
    include_baselines: bool = param(False, "Let the scikit-learn baselines of the chosen run's split compete by the "
                                    "same validation metric: where one is better, it is the version registered, "
                                    "and it meets the champion as a Keras model would.")

    def __post_init__(self):
        check_fields(self)
        _validation_metric("metric", self.metric)


@dataclass
class PipelineParams:
    """What `main` adds to the data and training parameters: the search and the registration."""

    tune_trials: int = param_like(TuneParams, "n_trials", default=8, low=0,
                                  help="Optuna trials after the training run (tune's n_trials; 0: no tuning).")
    tune_epochs: int = param_like(TuneParams, "trial_epochs", help="The most epochs a trial may run (tune's "
                                  "trial_epochs).")
    # Bounds the whole job's time on a slow machine.
    tune_timeout: float = param_like(TuneParams, "timeout", default=120.0)
    metric: str = param_like(RegisterParams, "metric", help="Validation metric that guides the search and picks "
                             "the model to register.")
    model_name: str = param_like(RegisterParams, "model_name")
    include_baselines: bool = param_like(RegisterParams, "include_baselines")
    env_manager: str = param("auto", "Env manager for the nested steps (auto: the one this run was started with).",
                             choices=ENV_MANAGERS)

    def __post_init__(self):
        check_fields(self)
        _validation_metric("metric", self.metric)
