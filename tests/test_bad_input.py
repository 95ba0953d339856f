"""Every bad input: one line naming the bad value, a non-zero exit, no traceback, and the run that
`mlflow run` made for the entry point marked FAILED with the reason in its `error` tag.

Each case runs as `mlflow run` runs an entry point, without a process of its own: a run made
beforehand, its id in MLFLOW_RUN_ID, then the console entry point `pipelines.cli.main`.
"""

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from pipelines import cli

TRAIN = ["train", "--epochs", "1", "--quiet", "--tensorboard", "false"]
SPLIT = ["split"]


@pytest.fixture
def files(tmp_path):
    pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "label": [0, 1, 0, 1]}).to_csv(tmp_path / "nolabel.csv", index=False)
    pd.DataFrame({"x": np.arange(30.0), "target": [0.0, None] + [1.0] * 28}).to_csv(tmp_path / "nan.csv", index=False)
    pd.DataFrame({"x": np.arange(42.0), "target": ["a"] * 40 + ["b"] * 2}).to_csv(tmp_path / "rare.csv", index=False)
    pd.DataFrame({"x": np.arange(8.0), "target": np.arange(8.0)}).to_csv(tmp_path / "tiny.csv", index=False)
    pd.DataFrame({"x": np.arange(30.0), "target": ["spam"] * 30}).to_csv(tmp_path / "oneclass.csv", index=False)
    pd.DataFrame({"x": np.arange(30.0), "target": ["low", "high", "n/a?"] * 10}).to_csv(
        tmp_path / "words.csv", index=False)
    size = np.round(np.linspace(0, 1, 40), 3).astype(object)
    size[[5, 17, 33]] = ["abc", "n/a?", "abc"]
    pd.DataFrame({"size": size, "target": np.arange(40) % 2}).to_csv(tmp_path / "mixed.csv", index=False)
    (tmp_path / "header.csv").write_text("x,target\n")
    (tmp_path / "blank.csv").write_text("")
    pd.DataFrame({"x": pd.Series([], dtype=float), "target": pd.Series([], dtype=int)}).to_parquet(
        tmp_path / "header.parquet")
    np.savez(tmp_path / "noy.npz", x=np.zeros((5, 2)))
    np.savez(tmp_path / "uneven.npz", x=np.zeros((5, 2)), y=np.zeros(6))
    (tmp_path / "rows.xlsx").write_bytes(b"not a table")
    return tmp_path


# name: (command and arguments, the line expected, exit code); {d} is the folder of `files`.
CASES = {
    "missing file": (TRAIN + ["--data", "{d}/absent.csv"], "data file not found: '{d}/absent.csv'", 1),
    "unknown builtin": (TRAIN + ["--data", "builtin:mnist"], "unknown builtin data set 'builtin:mnist'; choose one of",
                        1),
    "unsupported type": (TRAIN + ["--data", "{d}/rows.xlsx"], "unsupported data file type '.xlsx'", 1),
    "missing target": (TRAIN + ["--data", "{d}/nolabel.csv"], "target column 'target' is not in", 1),
    "target with NaN": (SPLIT + ["--data", "{d}/nan.csv"], "target column 'target' has 1 missing values", 1),
    "class too small": (TRAIN + ["--data", "{d}/rare.csv"], "class 'b' has only 2 row(s)", 1),
    "empty split": (TRAIN + ["--data", "{d}/tiny.csv", "--val-fraction", "0.05"], "the val split would be empty", 1),
    "fractions sum to 1": (TRAIN + ["--val-fraction", "0.5", "--test-fraction", "0.5"],
                           "val_fraction + test_fraction must be below 1", 1),
    "epochs zero": (TRAIN + ["--epochs", "0"], "epochs must be >= 1, got 0", 1),
    "epochs not a number": (TRAIN + ["--epochs", "ten"], "Invalid value for '--epochs': 'ten' is not a valid integer",
                            2),
    "batch_size negative": (TRAIN + ["--batch-size", "-4"], "batch_size must be >= 1, got -4", 1),
    "unknown model": (TRAIN + ["--model", "transformer"], "model must be one of auto, mlp, cnn, got 'transformer'", 1),
    "unknown optimizer": (TRAIN + ["--optimizer", "adagrad2"], "optimizer must be one of adam, adamw, sgd, rmsprop, "
                          "nadam, got 'adagrad2'", 1),
    "unknown monitor": (TRAIN + ["--data", "builtin:iris", "--monitor", "val_r2_score"],
                        "monitor must be one of val_loss, val_accuracy", 1),
    "npz without y": (TRAIN + ["--data", "{d}/noy.npz"], "has no array 'y'", 1),
    "npz lengths differ": (TRAIN + ["--data", "{d}/uneven.npz"], "'x' has 5 rows but 'y' has 6", 1),
    "cnn on a table": (TRAIN + ["--data", "builtin:iris", "--model", "cnn"], "model must be mlp or auto for tabular data, got 'cnn'", 1),
    "one-class target": (TRAIN + ["--data", "{d}/oneclass.csv"],
                         "target column 'target' of '{d}/oneclass.csv' holds one class only ('spam' in all 30 rows)",
                         1),
    "one-class target, split": (SPLIT + ["--data", "{d}/oneclass.csv"], "holds one class only ('spam'", 1),
    "header-only CSV": (TRAIN + ["--data", "{d}/header.csv"],
                        "data file '{d}/header.csv' has no rows (its columns: x, target)", 1),
    "empty CSV": (SPLIT + ["--data", "{d}/blank.csv"], "data file '{d}/blank.csv' is empty: no header, no rows", 1),
    "header-only Parquet": (SPLIT + ["--data", "{d}/header.parquet"],
                            "data file '{d}/header.parquet' has no rows (its columns: x, target)", 1),
    "mixed column, mixed_columns=error": (
        SPLIT + ["--data", "{d}/mixed.csv", "--mixed-columns", "error"],
        "column 'size' of '{d}/mixed.csv' is numeric except for 3 values: 'abc', 'n/a?'; fix them", 1),
    "regression target not numeric": (
        TRAIN + ["--data", "{d}/words.csv", "--task", "regression"],
        "task 'regression' needs a numeric target, but target column 'target' of '{d}/words.csv' holds values that "
        "are not numbers: 'low', 'high', 'n/a?'", 1),
    "unknown mixed_columns": (TRAIN + ["--mixed-columns", "drop"],
                              "mixed_columns must be one of numeric, categorical, error, got 'drop'", 1),
    "unknown task": (SPLIT + ["--task", "clustering"], "task must be one of auto, classification, regression, got "
                     "'clustering'", 1),
    "dropout out of range": (TRAIN + ["--dropout", "1"], "dropout must be in [0, 1), got 1.0", 1),
    "outage_timeout out of range": (TRAIN + ["--outage-timeout", "601"], "outage_timeout must be in [0, 600], got "
                                    "601.0", 1),
    "unknown head_init": (TRAIN + ["--head-init", "zeros"], "head_init must be one of probe, random, got 'zeros'", 1),
    "system_metrics_interval zero": (TRAIN + ["--system-metrics-interval", "0"],
                                     "system_metrics_interval must be > 0, got 0.0", 1),
    "system_metrics_interval negative": (TRAIN + ["--system-metrics-interval", "-1.5"],
                                         "system_metrics_interval must be > 0, got -1.5", 1),
    "keep_checkpoints negative": (TRAIN + ["--keep-checkpoints", "-1"], "keep_checkpoints must be >= 0, got -1", 1),
}


def _as_mlflow_run(tracking, monkeypatch, capsys, args):
    """Run the console entry point in a run made as `mlflow run` makes it; return (exit code, output lines,
    the run)."""
    run_id = MlflowClient().create_run(tracking.experiment_id).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", run_id)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args)
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip() and not line.startswith(("Usage:", "Try "))]
    return exit_info.value.code, lines, tracking.client.get_run(run_id)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_an_exit_code_and_a_failed_run(case, files, tracking, monkeypatch, capsys):
    args, expected, code = CASES[case]
    expected = expected.format(d=files)
    exit_code, lines, run = _as_mlflow_run(tracking, monkeypatch, capsys, [a.format(d=files) for a in args])
    assert exit_code == code
    assert len(lines) == 1, lines
    assert lines[0].startswith("Error: ") and expected in lines[0]
    assert run.info.status == "FAILED"
    assert expected in run.data.tags["error"]
    # Nothing of a failed input is left to look good or be reused: no finished split, no artifacts.
    assert tracking.runs("split", status="FINISHED") == []
    assert tracking.client.list_artifacts(run.info.run_id) == []


def test_failed_split_inside_train_fails_both_runs_with_the_value(files, tracking, monkeypatch, capsys):
    exit_code, lines, run = _as_mlflow_run(tracking, monkeypatch, capsys,
                                           TRAIN + ["--data", str(files / "rare.csv")])
    assert exit_code == 1 and "class 'b' has only 2 row(s)" in lines[0]
    [split] = tracking.runs("split")
    assert split.info.status == "FAILED" and split.data.tags["error"].startswith("class 'b' has only 2 row(s)")
    # The split is the train run's own work: nested under it, and the train run failed with it.
    assert split.data.tags.get("mlflow.parentRunId") == run.info.run_id
    assert run.info.status == "FAILED" and run.data.tags["error"].startswith("class 'b' has only 2 row(s)")
    assert tracking.runs("baselines") == []


def test_bad_data_by_hand_fails_the_split_run_it_opened(files, tracking, capsys):
    # No `mlflow run`: the split command opens a run of its own, and that one must end FAILED.
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["split", "--data", str(files / "oneclass.csv")])
    assert exit_info.value.code == 1
    assert "holds one class only ('spam' in all 30 rows)" in capsys.readouterr().err
    run = tracking.only_run("split")
    assert run.info.status == "FAILED" and "holds one class only" in run.data.tags["error"]
    assert tracking.client.list_artifacts(run.info.run_id) == []
