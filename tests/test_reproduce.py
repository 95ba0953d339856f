"""`fittrack reproduce`: a finished train run trained again from its record, epoch for epoch."""

import numpy as np
import pandas as pd
from click.testing import CliRunner

from pipelines.cli import cli
from pipelines.steps.reproduce import GIT_COMMIT_TAG, REPRODUCES_TAG, code_warnings, parse_config
from pipelines.train import TrainConfig
from tracking.runs import CODE_VERSION_TAG

FAST = ["--epochs", "3", "--tensorboard", "false", "--quiet"]


def _invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _train(*args):
    result = _invoke("train", *FAST, *args)
    assert result.exit_code == 0, result.output
    return result


def _val_loss(tracking, run_id):
    history = sorted(tracking.client.get_metric_history(run_id, "val_loss"), key=lambda m: m.step)
    return [(m.step, m.value) for m in history]


def test_reproduce_gives_the_same_epochs_and_prints_both_metrics(tracking):
    # Non-default params too, so that a field parsed back wrong shows up as different epochs.
    _train("--data", "builtin:wine", "--seed", "7", "--dropout", "0.1", "--batch-norm", "false",
           "--learning-rate", "0.003", "--batch-size", "16")
    original = tracking.only_run("train")
    result = _invoke("reproduce", original.info.run_id, "--quiet")
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output

    first, second = tracking.runs("train")
    assert first.info.run_id == original.info.run_id
    assert second.info.status == "FINISHED"
    assert second.data.tags[REPRODUCES_TAG] == original.info.run_id
    assert second.data.params["split_run_id"] == original.data.params["split_run_id"]
    for name in ("seed", "dropout", "batch_norm", "learning_rate", "batch_size", "epochs", "tensorboard"):
        assert second.data.params[name] == original.data.params[name], name
    assert len(tracking.runs("split")) == 1
    history = _val_loss(tracking, original.info.run_id)
    assert [step for step, _ in history] == [1, 2, 3]
    assert _val_loss(tracking, second.info.run_id) == history

    table = result.output.split(f"run {second.info.run_id} reproduces run {original.info.run_id}\n", 1)[1]
    rows = [line.split() for line in table.splitlines() if line.strip().startswith("test_accuracy ")]
    assert len(rows) == 1, result.output
    _, then, now, difference = rows[0]
    assert then == now == f"{original.data.metrics['test_accuracy']:.6g}"
    assert float(difference) == 0


def test_what_cannot_be_reproduced_is_one_line_and_no_run(tracking, tmp_path):
    path = tmp_path / "rows.csv"
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=60), "b": rng.normal(size=60)})
    frame["target"] = (frame["a"] > 0).astype(int)
    frame.to_csv(path, index=False)
    _train("--data", str(path), "--epochs", "1")
    train_run = tracking.only_run("train")
    split_run_id = train_run.data.params["split_run_id"]
    frame.loc[0, "b"] += 1.0
    frame.to_csv(path, index=False)

    cases = {
        "nosuchrun": "run 'nosuchrun' not found in the tracking store",
        split_run_id: f"run '{split_run_id}' is a split run; only a train run can be reproduced",
        train_run.info.run_id: f"data file '{path}' changed since run {train_run.info.run_id} (digest ",
    }
    before = {r.info.run_id for r in tracking.runs()}
    for run_id, expected in cases.items():
        result = CliRunner().invoke(cli, ["reproduce", run_id, "--quiet"])
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and expected in lines[0], result.output
    assert "cannot reproduce its split" in lines[0]
    assert {r.info.run_id for r in tracking.runs()} == before


def test_params_are_parsed_back_with_the_field_types():
    logged = {k: str(v).lower() if isinstance(v, bool) else str(v)
              for k, v in TrainConfig(epochs=5, xla=True, dropout=0.5, batch_norm=False).params().items()}
    logged["learning_rate"] = "1e-3"  # as `mlflow run -P learning_rate=1e-3` logs it
    del logged["patience"]  # a field added after the run was made
    warnings = []
    config = parse_config(TrainConfig, logged, "r1", warnings)
    assert config == TrainConfig(epochs=5, xla=True, dropout=0.5, batch_norm=False, learning_rate=0.001)
    assert isinstance(config.epochs, int) and config.xla is True and config.batch_norm is False
    assert warnings == [f"run r1 logged no patience; using what runs did before it existed, else the default "
                        f"(patience={TrainConfig().patience})"]


def test_a_run_from_before_a_field_gets_what_it_trained_with():
    # A run from before the MLP ensemble and label smoothing fitted one MLP on unsmoothed labels.
    logged = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in TrainConfig().params().items()}
    del logged["ensemble_size"], logged["label_smoothing"]
    warnings = []
    config = parse_config(TrainConfig, logged, "r1", warnings)
    assert (config.ensemble_size, config.label_smoothing) == (1, 0.0)
    assert (TrainConfig().ensemble_size, TrainConfig().label_smoothing) != (1, 0.0)
    assert "(ensemble_size=1, label_smoothing=0.0)" in warnings[0]


def test_empty_values_as_mlflow_run_logs_them_are_empty():
    from pipelines.steps.reproduce import _transfer

    # `mlflow run` logs an empty -P value (split_run_id, init_model) as the shell quote ''.
    assert _transfer({"init_model": "''", "freeze_epochs": "3"}, {}, "r1", []) is None


def test_a_changed_code_version_or_commit_is_a_warning_each():
    tags = {GIT_COMMIT_TAG: "c1", CODE_VERSION_TAG: "v1"}
    assert code_warnings(tags, "r1", "v1", "c1") == []
    assert code_warnings(tags, "r1", "v1", None) == []  # no git checkout: nothing to compare
    warned = code_warnings(tags, "r1", "v2", "c2")
    assert len(warned) == 2
    assert "git commit c1; this checkout is at c2" in warned[0]
    assert "(code version v1 then, v2 now)" in warned[1]
