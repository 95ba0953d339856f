"""Every bad input: one line naming the bad value, a non-zero exit, and no traceback."""

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from pipelines.cli import cli


@pytest.fixture
def files(tmp_path):
    pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "label": [0, 1, 0, 1]}).to_csv(tmp_path / "nolabel.csv", index=False)
    pd.DataFrame({"x": np.arange(30.0), "target": [0.0, None] + [1.0] * 28}).to_csv(tmp_path / "nan.csv", index=False)
    pd.DataFrame({"x": np.arange(42.0), "target": ["a"] * 40 + ["b"] * 2}).to_csv(tmp_path / "rare.csv", index=False)
    pd.DataFrame({"x": np.arange(8.0), "target": np.arange(8.0)}).to_csv(tmp_path / "tiny.csv", index=False)
    np.savez(tmp_path / "noy.npz", x=np.zeros((5, 2)))
    np.savez(tmp_path / "uneven.npz", x=np.zeros((5, 2)), y=np.zeros(6))
    (tmp_path / "rows.xlsx").write_bytes(b"not a table")
    return tmp_path


CASES = {
    "missing file": (["--data", "{d}/absent.csv"], "data file not found: '{d}/absent.csv'"),
    "unknown builtin": (["--data", "builtin:mnist"], "unknown builtin data set 'builtin:mnist'; choose one of"),
    "unsupported type": (["--data", "{d}/rows.xlsx"], "unsupported data file type '.xlsx'"),
    "missing target": (["--data", "{d}/nolabel.csv"], "target column 'target' is not in"),
    "target with NaN": (["--data", "{d}/nan.csv"], "target column 'target' has 1 missing values"),
    "class too small": (["--data", "{d}/rare.csv"], "class 'b' has only 2 row(s)"),
    "empty split": (["--data", "{d}/tiny.csv", "--val-fraction", "0.05"], "the val split would be empty"),
    "fractions sum to 1": (["--val-fraction", "0.5", "--test-fraction", "0.5"],
                           "val_fraction + test_fraction must be below 1"),
    "epochs zero": (["--epochs", "0"], "Invalid value for '--epochs': 0 is not in the range x>=1"),
    "epochs not a number": (["--epochs", "ten"], "Invalid value for '--epochs': 'ten' is not a valid integer"),
    "batch_size negative": (["--batch-size", "-4"], "Invalid value for '--batch-size': -4 is not in the range"),
    "unknown model": (["--model", "transformer"], "Invalid value for '--model': 'transformer' is not one of"),
    "unknown optimizer": (["--optimizer", "adagrad2"], "Invalid value for '--optimizer': 'adagrad2' is not one of"),
    "unknown monitor": (["--data", "builtin:iris", "--monitor", "val_r2_score"],
                        "unknown monitor 'val_r2_score' for classification; choose one of val_loss"),
    "npz without y": (["--data", "{d}/noy.npz"], "has no array 'y'"),
    "npz lengths differ": (["--data", "{d}/uneven.npz"], "'x' has 5 rows but 'y' has 6"),
    "cnn on a table": (["--data", "builtin:iris", "--model", "cnn"], "model 'cnn' needs image data"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_clear_line(case, files):
    args, expected = CASES[case]
    args = [a.format(d=files) for a in args]
    result = CliRunner().invoke(cli, ["train", "--epochs", "1", "--quiet", *args])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith(("Usage:", "Try "))]
    assert len(lines) == 1, result.output
    assert expected.format(d=files) in lines[0]


def test_a_run_opened_for_bad_data_ends_failed_with_the_reason(tracking, files):
    result = CliRunner().invoke(cli, ["split", "--data", str(files / "nan.csv")])
    assert result.exit_code == 1
    run = tracking.only_run("split")
    assert run.info.status == "FAILED"
    assert run.data.tags["error"].startswith("target column 'target' has 1 missing values")
    # Nothing half-written is left looking good: no split artifacts.
    assert tracking.client.list_artifacts(run.info.run_id) == []


def test_failed_split_inside_train_fails_and_names_the_value(tracking, files):
    result = CliRunner().invoke(cli, ["train", "--data", str(files / "rare.csv"), "--quiet"])
    assert result.exit_code == 1 and "class 'b' has only 2 row(s)" in result.output
    assert [r.info.status for r in tracking.runs("split")] == ["FAILED"]
    assert tracking.runs("train") == []
