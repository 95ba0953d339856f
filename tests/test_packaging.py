import os
import re
import subprocess
import sys
import tomllib

import click
import yaml
from click.testing import CliRunner

from pipelines.cli import cli
from tests.conftest import PROJECT_ROOT


def _read(name):
    with open(os.path.join(PROJECT_ROOT, name), "rb") as f:
        return f.read()


def test_conda_yaml_and_pyproject_name_the_same_dependencies():
    pyproject = tomllib.loads(_read("pyproject.toml").decode())["project"]["dependencies"]
    conda = yaml.safe_load(_read("conda.yaml"))
    pip_list = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    assert sorted(pip_list) == sorted(pyproject)


def test_mlproject_is_written_from_the_cli():
    from pipelines.mlproject import render

    # Each parameter is defined once, as a click option; MLproject is written from them.
    assert _read("MLproject").decode() == render(), "MLproject is stale: run python -m pipelines.mlproject"


def test_readme_parameter_list_is_written_from_the_cli():
    from pipelines.mlproject import with_readme_parameters

    readme = _read("README.md").decode()
    assert with_readme_parameters(readme) == readme, "README is stale: run python -m pipelines.mlproject"
    assert "`trial_patience` (6)" in readme and "`tune_trials` (8)" in readme
    # Each choice option lists its choices (wrapped lines joined).
    assert "`optimizer` (adam) `adam|adamw|sgd|rmsprop|nadam`" in " ".join(readme.split())


def test_mlproject_entry_points_match_the_cli():
    project = yaml.safe_load(_read("MLproject"))
    assert {"main", "split", "baselines", "train", "tune", "register", "reproduce"} <= set(
        project["entry_points"])
    for name, entry in project["entry_points"].items():
        command = cli.commands[name]
        options = {o.name: o for o in command.params}
        used = re.findall(r"--([a-z0-9-]+) \"?\{(\w+)\}", entry["command"])
        placeholders = re.findall(r"\{(\w+)\}", entry["command"])
        assert set(placeholders) == set(entry["parameters"]), name
        # A placeholder without its --flag is a click argument, in the command's order.
        positional = [p for p in placeholders if p not in {param for _, param in used}]
        assert positional == [p.name for p in command.params if isinstance(p, click.Argument)], name
        for param in positional:
            assert options[param].required == ("default" not in entry["parameters"][param]), (name, param)
        for flag, param in used:
            assert flag.replace("-", "_") == param, (name, flag)
            option = options[param]
            if "default" not in entry["parameters"][param]:
                assert option.required, (name, param)
                continue
            default = entry["parameters"][param]["default"]
            if isinstance(option.default, bool):
                assert str(option.default).lower() == default, (name, param)
            elif option.default not in (None, ""):
                assert type(option.default)(default) == option.default, (name, param)


def test_cli_import_is_light():
    code = ("import sys, pipelines.cli; heavy = [m for m in ('tensorflow', 'keras', 'mlflow', 'sklearn') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_help_lists_every_step_and_parameter():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for step in ("split", "train", "main"):
        assert step in result.output
    result = CliRunner().invoke(cli, ["train", "--help"])
    for option in ("--data", "--target", "--task", "--val-fraction", "--test-fraction", "--seed", "--epochs",
                   "--batch-size", "--dropout", "--monitor", "--class-weight", "--device", "--mixed-precision"):
        assert option in result.output, option


def test_ci_runs_the_readme_test_command():
    readme = _read("README.md").decode()
    after = readme.split("Run the tests:", 1)[1]
    command = after.split("```", 2)[1].strip()
    ci = [line for line in _read(".ci/run").decode().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == command


def test_tracking_imports_nothing_from_pipelines():
    # The import-linter contract in pyproject.toml: tracking/ is the door to MLflow, the steps use it.
    checked = subprocess.run([os.path.join(os.path.dirname(sys.executable), "lint-imports")], capture_output=True,
                             text=True, cwd=PROJECT_ROOT)
    assert checked.returncode == 0 and "1 kept, 0 broken" in checked.stdout, checked.stdout[-3000:]
