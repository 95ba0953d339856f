"""MLproject and the README's parameter list, written from the click commands: an entry point's
parameters are its command's options, with their defaults and help, so each parameter is defined
once (in pipelines/cli.py and the dataclasses its options come from). `python -m pipelines.mlproject`
rewrites both; tests/test_packaging.py checks that they are current.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap

import click

ENTRY_POINTS = ("main", "split", "baselines", "train", "tune", "register", "reproduce")
# Options of the shell, not of a run's record: progress output, and --run-id, which `mlflow run`
# has its own of (it resumes the run, as `fittrack train --run-id` does).
NOT_PARAMETERS = {"train": {"run_id"}}
#: Parameters of every entry point, listed once in the README.
EVERY_ENTRY_POINT = ("verbose",)
HEADER = """\
# Written by `python -m pipelines.mlproject` from the commands in pipelines/cli.py: edit those, not this.
name: fittrack

# Runs in the current Python with: mlflow run . --env-manager local
# (with conda: mlflow run . builds conda.yaml's environment).
conda_env: conda.yaml

entry_points:
"""


def _skipped(command: str, name: str) -> bool:
    return name == "quiet" or name in NOT_PARAMETERS.get(command, set())


def _mlflow_type(param: click.Parameter) -> str:
    kind = param.type
    if isinstance(kind, click.types.IntParamType):  # IntRange too
        return "int"
    if isinstance(kind, click.types.FloatParamType):
        return "float"
    return "string"


def _default(param: click.Parameter) -> str | None:
    """The default as MLproject writes it (YAML), or None for a required parameter."""
    if param.required or (isinstance(param, click.Argument) and param.default is None):
        return None
    value = param.default
    if isinstance(value, bool):
        return json.dumps(str(value).lower())
    if value is None:
        return '""'
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)


def entry_point(command: click.Command) -> str:
    """One entry point's YAML: its parameters and the command that passes each on."""
    lines, words = [f"  {command.name}:", "    parameters:"], ["python -m pipelines.cli", command.name]
    for param in command.params:
        if getattr(param, "hidden", False) or _skipped(command.name, param.name):
            continue
        default = _default(param)
        spec = f"type: {_mlflow_type(param)}" + (f", default: {default}" if default is not None else "")
        lines.append(f"      {param.name}: {{{spec}}}")
        if isinstance(param, click.Argument):
            words.append(f"{{{param.name}}}")
        else:
            words.append(f"{param.opts[0]} {{{param.name}}}")
    lines.append("    command: >-")
    lines += textwrap.wrap(" ".join(words), width=110, initial_indent=" " * 6, subsequent_indent=" " * 6,
                           break_on_hyphens=False, break_long_words=False)
    return "\n".join(lines)


def render() -> str:
    from pipelines.cli import cli

    return HEADER + "\n\n".join(entry_point(cli.commands[name]) for name in ENTRY_POINTS) + "\n"


README_START = "<!-- parameters: written by `python -m pipelines.mlproject` from pipelines/cli.py -->"
README_END = "<!-- /parameters -->"


def _describe(param: click.Parameter) -> str:
    if isinstance(param, click.Argument):
        return f"`{param.name}` (required)"
    default = param.default
    shown = "required" if param.required else (
        str(default).lower() if isinstance(default, bool) else "none" if default in (None, "") else str(default))
    text = f"`{param.name}` ({shown})"
    # click.Choice, or tracking.fields' choice type, which shows the choices and leaves refusing to the constructor.
    choices = getattr(param.type, "choices", None)
    if choices:
        text += f" `{'|'.join(map(str, choices))}`"
    return text + (f": {param.help.rstrip('.')}" if param.help else "")


def readme_parameters() -> str:
    """The README's list: the data and training options once, then what each entry point adds."""
    from pipelines.cli import cli, data_options, train_options

    def names(decorator) -> list[str]:
        return [p.name for p in reversed(decorator(click.command()(lambda **_: None)).params)]

    groups = {"Data": names(data_options), "Training": names(train_options)}
    lines = [README_START,
             "Every entry point takes its parameters as `-P NAME=VALUE` (`mlflow run . -e ENTRY_POINT -P ...`);",
             "`fittrack ENTRY_POINT --name value` takes the same (`fittrack ENTRY_POINT --help`). Defaults in",
             "parentheses.", ""]
    users = {}
    for group, members in groups.items():
        # A group's users are the commands built with its decorator, which have its first option.
        users[group] = [name for name in ENTRY_POINTS if members[0] in {p.name for p in cli.commands[name].params}]
        reference = cli.commands["train"]
        params = [p for p in reference.params if p.name in members and not _skipped("train", p.name)]
        item = f"{group} ({', '.join(f'`{u}`' for u in users[group])}): " + "; ".join(map(_describe, params)) + "."
        lines += _wrapped(item)
    for name in ENTRY_POINTS:
        command = cli.commands[name]
        shared = set().union(*(groups[g] for g in groups if name in users[g]))
        own = [p for p in command.params if p.name not in shared and not getattr(p, "hidden", False)
               and not _skipped(name, p.name) and p.name not in EVERY_ENTRY_POINT]
        if own:
            lines += _wrapped(f"`{name}`{' also' if shared else ''}: " + "; ".join(map(_describe, own)) + ".")
    for option in EVERY_ENTRY_POINT:
        param = next(p for p in cli.commands["train"].params if p.name == option)
        lines += _wrapped(f"Every entry point also takes {_describe(param)}.")
    lines += _wrapped("`tune` takes the training parameters but `epochs`, `patience` and `monitor`: its trials use "
                      "`trial_epochs`, `trial_patience` and `metric`.")
    lines.append(README_END)
    return "\n".join(lines)


def _wrapped(item: str) -> list[str]:
    return textwrap.wrap(item, width=100, initial_indent="- ", subsequent_indent="  ", break_on_hyphens=False,
                         break_long_words=False)


def _project_file(name: str) -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), name)


def with_readme_parameters(readme: str) -> str:
    """The README with its parameter list rewritten (between README_START and README_END)."""
    start, end = readme.index(README_START), readme.index(README_END) + len(README_END)
    return readme[:start] + readme_parameters() + readme[end:]


def main() -> None:
    with open(_project_file("MLproject"), "w") as f:
        f.write(render())
    with open(_project_file("README.md")) as f:
        readme = f.read()
    with open(_project_file("README.md"), "w") as f:
        f.write(with_readme_parameters(readme))
    print("wrote MLproject and the README's parameter list", file=sys.stderr)


if __name__ == "__main__":
    main()
