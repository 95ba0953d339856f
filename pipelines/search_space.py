"""The hyperparameter search space: defaults per model family, overridable from YAML.

A YAML file maps parameter names to a range, a list of choices or a fixed value, either at the
top level or under a model family (`mlp:`, `cnn:`):

    mlp:
      learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}
      batch_size: {choices: [32, 64, 128]}
      layers: {low: 1, high: 3}        # whole numbers give an integer range
      dropout: 0.1                     # fixed
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.errors import FittrackError

TUNABLE = ("model", "layers", "units", "dropout", "learning_rate", "optimizer", "l2", "batch_size",
           "class_weight", "patience", "reduce_lr_patience", "ensemble_size", "label_smoothing")


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    log: bool = False
    integer: bool = False

    def suggest(self, trial, name):
        if self.integer:
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def can_enqueue(self, value) -> bool:
        """Whether a trial may be enqueued with `value` (a log range's low is above 0, so 0 is not)."""
        return self.low <= value <= self.high


@dataclass(frozen=True)
class Choice:
    choices: tuple

    def suggest(self, trial, name):
        return trial.suggest_categorical(name, list(self.choices))

    def can_enqueue(self, value) -> bool:
        return value in self.choices


@dataclass(frozen=True)
class Fixed:
    value: object

    def suggest(self, trial, name):
        return self.value

    def can_enqueue(self, value) -> bool:
        # Never suggested, so a value enqueued for it would never be read.
        return False


DEFAULTS = {
    "mlp": {
        "learning_rate": Range(1e-4, 1e-2, log=True),
        "batch_size": Choice((16, 32, 64, 128)),
        "dropout": Range(0.0, 0.5),
        "layers": Range(1, 3, integer=True),
        "units": Range(16, 256, log=True, integer=True),
        "optimizer": Choice(("adam", "adamw", "rmsprop")),
        "l2": Range(1e-7, 1e-2, log=True),
    },
    "cnn": {
        "learning_rate": Range(1e-4, 1e-2, log=True),
        "batch_size": Choice((16, 32, 64, 128)),
        "dropout": Range(0.0, 0.5),
        "layers": Range(1, 3, integer=True),
        "units": Choice((8, 16, 32, 48, 64)),
        "optimizer": Choice(("adam", "adamw", "rmsprop")),
        "l2": Range(1e-7, 1e-2, log=True),
    },
}


def load_space(path: str | None, family: str) -> dict:
    """The default space for `family`, with the YAML file's entries (if any) laid over it."""
    space = dict(DEFAULTS[family])
    if not path:
        return space
    import yaml

    try:
        with open(path) as f:
            document = yaml.safe_load(f)
    except FileNotFoundError:
        raise FittrackError(f"search space file not found: {path!r}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise FittrackError(f"search space file {path!r} is not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    if document is None:
        return space
    if not isinstance(document, dict):
        raise FittrackError(f"search space file {path!r} must map parameter names to ranges, got a "
                            f"{type(document).__name__}")
    families = set(DEFAULTS)
    if set(document) & families:
        document = {**{k: v for k, v in document.items() if k not in families}, **(document.get(family) or {})}
    for name, spec in document.items():
        if name not in TUNABLE:
            raise FittrackError(f"search space file {path!r} names unknown parameter {name!r}; "
                                f"tunable are: {', '.join(TUNABLE)}")
        space[name] = parse_spec(name, spec, path)
    return space


def parse_spec(name: str, spec, path: str = "search space"):
    if isinstance(spec, dict):
        if "choices" in spec:
            choices = spec["choices"]
            if not isinstance(choices, list) or not choices:
                raise FittrackError(f"{path}: {name!r} choices must be a non-empty list, got {choices!r}")
            return Choice(tuple(_number(c) for c in choices))
        if "low" in spec and "high" in spec:
            low, high = _number(spec["low"]), _number(spec["high"])
            if not all(isinstance(v, (int, float)) for v in (low, high)):
                raise FittrackError(f"{path}: {name!r} low and high must be numbers, got {low!r} and {high!r}")
            if low > high:
                raise FittrackError(f"{path}: {name!r} has low {low} above high {high}")
            log = bool(spec.get("log", False))
            if log and low <= 0:
                raise FittrackError(f"{path}: {name!r} on a log scale needs low > 0, got {low!r}")
            integer = isinstance(low, int) and isinstance(high, int)
            return Range(low, high, log=log, integer=integer)
        raise FittrackError(f"{path}: {name!r} needs 'low' and 'high', or 'choices', or a fixed value; got {spec!r}")
    if isinstance(spec, list):
        return parse_spec(name, {"choices": spec}, path)
    return Fixed(_number(spec))


def _number(value):
    """YAML 1.1 reads 1e-4 as a string; take it as the number that was meant."""
    if isinstance(value, str):
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                continue
    return value
