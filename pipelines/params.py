"""Every step's parameters, each defined once: its default, type, range, choices and help.

The dataclasses here (and pipelines.train.TrainConfig) are the one source: the click options of
pipelines/cli.py are built from their fields (`click_options`), MLproject and the README's list are
written from those options (pipelines/mlproject.py). Importing this module stays light (no MLflow,
no TensorFlow): `fittrack --help` builds its options from it.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import asdict, dataclass

#: The validation metric that guides training, tuning, registration and comparison by default.
DEFAULT_METRIC = "val_loss"


def param(default, help: str = "", *, choices: tuple | None = None, low=None, high=None,
          low_open: bool = False, high_open: bool = False):
    """A dataclass field that is also a command-line option (and an MLproject parameter)."""
    return dataclasses.field(default=default, metadata={
        "option": True, "help": help, "choices": choices, "low": low, "high": high,
        "low_open": low_open, "high_open": high_open})


def click_options(cls, *, exclude: tuple = (), only: tuple | None = None):
    """A decorator adding one click option per `param` field of dataclass `cls`, in field order."""
    import click

    hints = typing.get_type_hints(cls)
    options = []
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not meta.get("option") or f.name in exclude or (only is not None and f.name not in only):
            continue
        kind = hints[f.name]
        if meta["choices"]:
            click_type = click.Choice(list(meta["choices"]))
        elif kind is bool:
            click_type = click.BOOL
        elif kind in (int, float):
            ranged = click.IntRange if kind is int else click.FloatRange
            bounds = {"min": meta["low"], "max": meta["high"]}
            if kind is float:
                bounds.update(min_open=meta["low_open"], max_open=meta["high_open"])
            click_type = ranged(**bounds) if meta["low"] is not None or meta["high"] is not None else kind
        else:
            click_type = str
        options.append(click.option(f"--{f.name.replace('_', '-')}", type=click_type, default=f.default,
                                    show_default=True, help=meta["help"] or None))
    return lambda command: functools.reduce(lambda acc, option: option(acc), reversed(options), command)


def take(cls, kwargs: dict, **extra):
    """An instance of `cls` from (and out of) a command's keyword arguments."""
    names = [f.name for f in dataclasses.fields(cls) if f.metadata.get("option")]
    return cls(**{name: kwargs.pop(name) for name in names if name in kwargs}, **extra)


@dataclass
class DataParams:
    """The parameters every step that reads the data understands."""

    data: str = param("builtin:digits", "builtin:digits|breast_cancer|wine|iris|diabetes, or a .csv, .parquet "
                      "or .npz file.")
    target: str = param("target", "Target column of a CSV/Parquet file (NPZ files use arrays x and y).")
    task: str = param("auto", "auto infers it from the target.", choices=("auto", "classification", "regression"))
    val_fraction: float = param(0.15, "Share of rows for validation (early stopping, checkpoints, tuning).")
    test_fraction: float = param(0.2, "Share of rows held out for the one final test.")
    seed: int = param(42, "Seeds the split, the weights and the shuffling: same seed, same metrics.")
    mixed_columns: str = param("numeric", "A column of numbers holding a few strings (abc, n/a?): numeric makes "
                               "them missing values, categorical keeps every value as a category, error stops.",
                               choices=("numeric", "categorical", "error"))

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
class TuneParams:
    """The Optuna study's parameters (the trials' training parameters are a TrainConfig)."""

    n_trials: int = param(20, "Finished (complete or pruned) trials the study should reach, over all workers.",
                          low=1)
    timeout: float = param(0.0, "Stop starting trials after this many seconds (0: no limit).", low=0)
    metric: str = param(DEFAULT_METRIC, "Validation metric to optimise, e.g. val_loss, val_accuracy, val_auc, "
                        "val_r2_score.")
    direction: str = param("auto", "auto: from the metric (loss, mse, mae minimised; the rest maximised).",
                           choices=("auto", "minimize", "maximize"))
    sampler: str = param("tpe", "tpe, random, cmaes or gp (gp needs torch).")
    pruner: str = param("median", "median, hyperband or none.")
    study: str = param("", "Study name (default: DATA-MODEL-SPLIT, e.g. digits-cnn-1a2b3c4d: one study per "
                       "split); the same name resumes the study.")
    storage: str = param("", "Optuna storage URL, e.g. postgresql://user@host/db (default: "
                         "$FITTRACK_OPTUNA_STORAGE, else optuna.db beside the MLflow SQLite store). Put a URL with "
                         "a password in FITTRACK_OPTUNA_STORAGE: `mlflow run` logs -P values as params.")
    workers: int = param(1, "Local processes sharing the study.", low=1)
    trial_epochs: int = param(15, "The most epochs a trial may run.", low=1)
    search_space: str = param("", "YAML file overriding the default search space.")
    heartbeat_interval: int = param(10, "Seconds between a running trial's heartbeats.", low=1)
    grace_period: int = param(30, "Seconds without heartbeat after which another worker fails (and retries) "
                              "a trial.", low=2)

    def validate(self) -> None:
        from pipelines import tune as tuning
        from pipelines.errors import FittrackError

        if not isinstance(self.n_trials, int) or self.n_trials < 1:
            raise FittrackError(f"n_trials must be a positive whole number, got {self.n_trials!r}")
        if self.workers < 1:
            raise FittrackError(f"workers must be a positive whole number, got {self.workers!r}")
        if self.timeout < 0:
            raise FittrackError(f"timeout must be >= 0 seconds (0: no limit), got {self.timeout}")
        if self.sampler not in tuning.SAMPLERS:
            raise FittrackError(f"unknown sampler '{self.sampler}'; choose one of {', '.join(tuning.SAMPLERS)}")
        if self.pruner not in tuning.PRUNERS:
            raise FittrackError(f"unknown pruner '{self.pruner}'; choose one of {', '.join(tuning.PRUNERS)}")
        tuning.direction_for(self.metric, self.direction)
        if self.heartbeat_interval < 1 or self.grace_period <= self.heartbeat_interval:
            raise FittrackError(f"need heartbeat_interval >= 1 and grace_period above it, got "
                                f"{self.heartbeat_interval} and {self.grace_period}")


@dataclass
class PipelineParams:
    """What `main` adds to the data and training parameters: the search and the registration."""

    tune_trials: int = param(8, "Optuna trials after the training run (tune's n_trials; 0: no tuning).", low=0)
    tune_epochs: int = param(TuneParams.trial_epochs, "The most epochs a trial may run (tune's trial_epochs).",
                             low=1)
    # Bounds the whole job's time on a slow machine.
    tune_timeout: float = param(120.0, "Stop starting trials after this many seconds (0: no limit).", low=0)
    metric: str = param(DEFAULT_METRIC, "Validation metric that guides the search and picks the model to "
                        "register.")
    model_name: str = param("", "Registered model name (default: from the data, e.g. digits).")

    def validate(self) -> None:
        from pipelines.errors import FittrackError

        if not isinstance(self.tune_trials, int) or self.tune_trials < 0:
            raise FittrackError(f"tune_trials must be a whole number >= 0 (0 skips tuning), got {self.tune_trials!r}")
        if not isinstance(self.tune_epochs, int) or self.tune_epochs < 1:
            raise FittrackError(f"tune_epochs must be a positive whole number, got {self.tune_epochs!r}")
        if self.tune_timeout < 0:
            raise FittrackError(f"tune_timeout must be >= 0 seconds (0: no limit), got {self.tune_timeout}")
        if not self.metric.startswith("val_"):
            raise FittrackError(f"metric must be a validation metric (val_*), got '{self.metric}'")
