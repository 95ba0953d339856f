"""The quality bar, with the default parameters, on the builtin sets (slow: full-length fits)."""

import pytest
from click.testing import CliRunner

from pipelines.cli import cli

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("data, check", [
    ("builtin:digits", lambda m: m["test_accuracy"] >= 0.97),
    ("builtin:breast_cancer", lambda m: m["test_auc"] >= 0.99),
    ("builtin:diabetes", lambda m: m["test_r2_score"] > m["baseline_test_r2_score"]),
])
def test_default_training_meets_the_bar(tracking, data, check):
    result = CliRunner().invoke(cli, ["train", "--data", data, "--quiet", "--tensorboard", "false"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    metrics = tracking.only_run("train").data.metrics
    assert check(metrics), {k: v for k, v in metrics.items() if k.startswith(("test_", "baseline_"))}
