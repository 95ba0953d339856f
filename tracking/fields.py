"""Parameters defined once: a dataclass field that carries its default, type, range, choices and help.

The dataclass checks its fields in its constructor, as a Keras callback checks its keyword arguments
(`check_fields` in `__post_init__`), and the click options are built from the same fields
(`click_options`), so `fittrack --help`, MLproject and the README (pipelines/mlproject.py) say what
the constructor accepts. Click only converts text to the field's type; whether a value is allowed is
the constructor's to say, in one style: `NAME must be ..., got VALUE` with VALUE as Python writes it
(repr: strings quoted, numbers bare).

It lives in tracking/ because tracking's own commands (the server, compare) take parameters too, and
tracking imports nothing from pipelines. Importing it stays light: `fittrack --help` builds every
option from it.
"""

from __future__ import annotations

import dataclasses
import functools
import typing

from tracking.errors import FittrackError

__all__ = ["click_options", "check_fields", "describe_range", "param", "param_like", "take"]


def param(default, help: str = "", *, choices: tuple | None = None, low=None, high=None, low_open: bool = False,
          high_open: bool = False, hidden: bool = False, flag: bool = False, option: str | None = None,
          multiple: bool = False, envvar: str | None = None, before=None, switch: bool = False):
    """A dataclass field that is also a command-line option (and, for the steps, an MLproject parameter).

    `low`/`high` bound a number (`*_open`: the bound itself is not allowed); `choices` lists the
    accepted strings; `hidden` keeps it out of --help and MLproject; `flag` makes a bool a bare
    switch (--quiet); `switch` makes a bool a bare switch that also takes a value (--verbose alone is
    true, --verbose false is false), so that MLproject can pass it on; `option` names the option
    when the field's name would read badly on the command line (--filter for filter_string); `multiple` takes the option several times (a tuple);
    `before` is the value a run made before the field existed trained with, where that differs from
    the default (`fittrack reproduce` reads it for a run that did not log the field)."""
    metadata = {"option": True, "help": help, "choices": choices, "low": low, "high": high, "low_open": low_open,
                "high_open": high_open, "hidden": hidden, "flag": flag, "name": option, "multiple": multiple,
                "envvar": envvar, "before": before, "switch": switch}
    return dataclasses.field(default=default, metadata=metadata)


def param_like(cls, name: str, **changes):
    """The field `name` of dataclass `cls` again, for a class that takes the same parameter (with
    `changes` to its default or help): one definition of what it accepts."""
    field = {f.name: f for f in dataclasses.fields(cls)}[name]
    metadata = {**field.metadata, **{k: v for k, v in changes.items() if k != "default"}}
    return dataclasses.field(default=changes.get("default", field.default), metadata=metadata)


def describe_range(meta: dict) -> str:
    """The accepted range, as --help and an error message say it: `>= 1`, `in [0, 1)`; '' if none."""
    low, high = meta.get("low"), meta.get("high")
    if low is None and high is None:
        return ""
    if low is not None and high is not None:
        return f"in {'(' if meta['low_open'] else '['}{low}, {high}{')' if meta['high_open'] else ']'}"
    if low is not None:
        return f"{'>' if meta['low_open'] else '>='} {low}"
    return f"{'<' if meta['high_open'] else '<='} {high}"


def _in_range(value, meta: dict) -> bool:
    low, high = meta.get("low"), meta.get("high")
    if low is not None and not (value > low if meta["low_open"] else value >= low):
        return False
    return high is None or (value < high if meta["high_open"] else value <= high)


_KINDS = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}


def _of_kind(value, kind) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return kind not in _KINDS or isinstance(value, kind)


def check_fields(obj) -> None:
    """Raise FittrackError naming the first field of dataclass `obj` whose value its `param` refuses."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        meta = f.metadata
        if not meta.get("option") or meta["multiple"]:
            continue
        value, kind = getattr(obj, f.name), hints[f.name]
        if not _of_kind(value, kind):
            raise FittrackError(f"{f.name} must be {_KINDS.get(kind, kind)}, got {value!r}")
        if meta["choices"] and value not in meta["choices"]:
            raise FittrackError(f"{f.name} must be one of {', '.join(meta['choices'])}, got {value!r}")
        if kind in (int, float) and not _in_range(value, meta):
            raise FittrackError(f"{f.name} must be {describe_range(meta)}, got {value!r}")


def _choice_type(choices: tuple):
    """A click type that shows and completes the choices but leaves refusing a value to the constructor."""
    import click

    class Choices(click.ParamType):
        name = "choice"

        def get_metavar(self, param, ctx=None):
            return f"[{'|'.join(choices)}]"

        def shell_complete(self, ctx, param, incomplete):
            from click.shell_completion import CompletionItem

            return [CompletionItem(c) for c in choices if c.startswith(incomplete)]

    Choices.choices = tuple(choices)
    return Choices()


def click_options(cls, *, exclude: tuple = (), only: tuple | None = None, required: tuple = ()):
    """A decorator adding one click option per `param` field of dataclass `cls`, in field order;
    `required`: fields this command cannot do without (no default)."""
    import click

    hints = typing.get_type_hints(cls)
    options = []
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not meta.get("option") or f.name in exclude or (only is not None and f.name not in only):
            continue
        kind = hints[f.name]
        bounds = describe_range(meta)
        help_text = " ".join(filter(None, (meta["help"], f"Range: {bounds}." if bounds else "")))
        decls = [f"--{(meta['name'] or f.name).replace('_', '-')}", f.name]
        settings = {"help": help_text or None, "hidden": meta["hidden"], "envvar": meta["envvar"]}
        if meta["flag"]:
            options.append(click.option(*decls, is_flag=True, **settings))
            continue
        if meta.get("switch"):
            options.append(click.option(*decls, type=click.BOOL, is_flag=False, flag_value=True, default=f.default,
                                        **settings))
            continue
        if f.name in required:
            settings["required"] = True
        elif meta["multiple"]:
            settings.update(multiple=True, default=f.default)
        else:
            settings.update(default=f.default, show_default=f.default not in ("", None))
        if meta["choices"]:
            click_type = _choice_type(meta["choices"])
        else:
            click_type = {bool: click.BOOL, int: click.INT, float: click.FLOAT}.get(kind, click.STRING)
        options.append(click.option(*decls, type=click_type, **settings))
    return lambda command: functools.reduce(lambda acc, option: option(acc), reversed(options), command)


def take(cls, kwargs: dict, **extra):
    """An instance of `cls` from (and out of) a command's keyword arguments."""
    names = [f.name for f in dataclasses.fields(cls) if f.metadata.get("option")]
    return cls(**{name: kwargs.pop(name) for name in names if name in kwargs}, **extra)
