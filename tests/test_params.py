"""Each parameter defined once: every option of every command is a dataclass field, the constructor
refuses what the field's range and choices refuse, and every message quotes the value one way."""

import ast
import dataclasses
import os
import re

import click
import pytest

from pipelines.cli import cli
from pipelines.params import DataParams, PipelineParams, RegisterParams, StepParams, TuneParams
from pipelines.split import SplitConfig
from pipelines.train import TrainConfig
from pipelines.transfer import TransferConfig
from tests.conftest import PROJECT_ROOT
from tracking.compare import CompareParams
from tracking.errors import FittrackError
from tracking.server import ServerConfig

PARAMETER_CLASSES = (DataParams, StepParams, TuneParams, PipelineParams, RegisterParams, TrainConfig, TransferConfig,
                     SplitConfig, ServerConfig, CompareParams)


def _fields(cls):
    return [f for f in dataclasses.fields(cls) if f.metadata.get("option")]


def _cases():
    for cls in PARAMETER_CLASSES:
        for f in _fields(cls):
            meta = f.metadata
            if meta["choices"]:
                yield cls, f.name, "not-a-choice", f"{f.name} must be one of {', '.join(meta['choices'])}, got " \
                                                   "'not-a-choice'"
            for bound, is_open, step in ((meta["low"], meta["low_open"], -1), (meta["high"], meta["high_open"], 1)):
                if bound is not None:
                    value = bound if is_open else bound + step
                    yield cls, f.name, value, f"{f.name} must be "


@pytest.mark.parametrize("cls, name, value, message", list(_cases()),
                         ids=lambda v: v.__name__ if isinstance(v, type) else str(v))
def test_the_constructor_refuses_what_the_field_refuses(cls, name, value, message):
    cls()  # the defaults are accepted
    with pytest.raises(FittrackError) as info:
        cls(**{name: value})
    assert str(info.value).startswith(message) and str(info.value).endswith(f"got {value!r}")


@pytest.mark.parametrize("cls", PARAMETER_CLASSES, ids=lambda c: c.__name__)
def test_a_value_of_the_wrong_type_is_refused_by_name(cls):
    f = next(f for f in _fields(cls) if not f.metadata["multiple"])
    wrong = 1.5 if isinstance(f.default, str) else "text"
    with pytest.raises(FittrackError, match=f"^{f.name} must be .*, got {re.escape(repr(wrong))}$"):
        cls(**{f.name: wrong})


def _commands(group, prefix=""):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", command


def test_every_option_is_a_field_with_the_same_default():
    fields = {}
    for cls in PARAMETER_CLASSES:
        for f in _fields(cls):
            fields.setdefault(f.name, []).append(f)
    checked = 0
    for name, command in _commands(cli):
        for option in command.params:
            if isinstance(option, click.Argument) or option.name == "help":
                continue
            assert option.name in fields, f"{name} --{option.name} is not defined as a dataclass field"
            if not option.required and not option.is_flag:
                assert option.default in [f.default for f in fields[option.name]], (name, option.name)
            checked += 1
    assert checked > 80


def _messages(path):
    """The f-strings raised as errors in a module."""
    tree = ast.parse(open(path).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            for arg in node.exc.args:
                for part in ast.walk(arg):
                    if isinstance(part, ast.JoinedStr):
                        yield node.lineno, part


def test_error_messages_quote_values_one_way():
    # A value goes into a message as {value!r}: strings quoted as Python writes them, numbers bare;
    # never '{value}' by hand, which quotes numbers too and breaks on a value holding a quote.
    hand_quoted = []
    for package in ("pipelines", "tracking"):
        for folder, _, files in os.walk(os.path.join(PROJECT_ROOT, package)):
            for file in files:
                if not file.endswith(".py"):
                    continue
                path = os.path.join(folder, file)
                for line, string in _messages(path):
                    pieces = string.values
                    for before, value, after in zip(pieces, pieces[1:], pieces[2:]):
                        if (isinstance(value, ast.FormattedValue) and isinstance(before, ast.Constant)
                                and isinstance(after, ast.Constant) and str(before.value).endswith("'")
                                and str(after.value).startswith("'")):
                            hand_quoted.append(f"{os.path.relpath(path, PROJECT_ROOT)}:{line}")
    assert hand_quoted == []
