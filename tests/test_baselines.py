"""The baselines step on its own: every baseline a run with the Keras runs' metric names and a
model that predicts from raw rows."""

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn import metrics

from pipelines.params import DataParams
from pipelines.steps.baselines import run_baselines
from pipelines.steps.split import run_split
from tracking.datasets import load_split


def _table(tmp_path, n=300, seed=0):
    """Numbers with gaps and a few strings, and a category that decides part of the label."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "income": rng.normal(50, 10, n),
        "rooms": rng.integers(1, 6, n).astype(object),
        "city": rng.choice(["paris", "rome", "oslo", "lima"], n),
    })
    frame.loc[::7, "income"] = np.nan
    frame.loc[::11, "city"] = None
    frame.loc[[3, 50], "rooms"] = ["abc", "n/a?"]
    frame["bought"] = np.where((frame["income"].fillna(50) > 52) | (frame["city"] == "rome"), "yes", "no")
    path = tmp_path / "rows.csv"
    frame.to_csv(path, index=False)
    return str(path)


def _baselines(tracking, data, **params):
    split_run_id = run_split(DataParams(data=data, **params))
    run_baselines(split_run_id, seed=42)
    return load_split(split_run_id), tracking.only_run("baselines"), {
        b.data.params["baseline"]: b for b in tracking.runs("baseline")}


def test_every_baseline_is_a_run_with_a_model_that_takes_raw_rows(tracking, tmp_path):
    import warnings

    from pipelines.data import MixedColumnWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MixedColumnWarning)
        split, step, baselines = _baselines(tracking, _table(tmp_path), target="bought")
    assert set(baselines) == {"dummy", "linear", "svm", "hist_gradient_boosting"}
    scores = {name: {k for k in b.data.metrics if k.startswith(("val_", "test_"))} for name, b in baselines.items()}
    assert all(names == scores["linear"] for names in scores.values()), scores
    assert {"val_loss", "val_accuracy", "val_auc", "test_accuracy", "test_f1_score"} <= scores["linear"]
    best = max(baselines.values(), key=lambda b: b.data.metrics["val_accuracy"])
    assert step.data.tags["best_baseline"] == best.data.params["baseline"]
    boosting = baselines["hist_gradient_boosting"]
    # Early stopping on the validation part ended the fit, not the cap on rounds.
    assert boosting.data.params["early_stopping_on"] == "val"
    assert boosting.data.metrics["n_iter"] < int(boosting.data.params["max_iter"])
    assert boosting.data.params["encoding"] == "native" and baselines["linear"].data.params["encoding"] == "network"

    test = split.parts["test"]
    for name in ("hist_gradient_boosting", "linear"):  # raw columns with native categories; one-hot features
        run = baselines[name]
        assert run.data.tags["fittrack.model_uri"].startswith("models:/")
        model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
        predicted = np.asarray(model.predict(test.x))
        assert set(predicted) <= {"yes", "no"}
        assert metrics.accuracy_score(test.y, predicted) == pytest.approx(run.data.metrics["test_accuracy"], abs=1e-12)
    # Served rows may hold what training never saw: an unknown city, a string among the numbers.
    odd = test.x.iloc[:3].copy()
    odd["city"], odd["rooms"] = ["tokyo", None, "rome"], ["7", "abc", 2]
    assert len(model.predict(odd)) == 3
    estimator = mlflow.sklearn.load_model(f"runs:/{baselines['hist_gradient_boosting'].info.run_id}/estimator")
    assert type(estimator).__name__ == "HistGradientBoostingClassifier"


def test_regression_baselines_predict_values_in_the_target_units(tracking):
    split, step, baselines = _baselines(tracking, "builtin:diabetes")
    assert set(baselines) == {"dummy", "linear", "svm", "hist_gradient_boosting"}
    run = baselines["hist_gradient_boosting"]
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    test = split.parts["test"]
    predicted = np.asarray(model.predict(test.x), dtype=float)
    assert metrics.r2_score(test.y, predicted) == pytest.approx(run.data.metrics["test_r2_score"], abs=1e-12)
    assert step.data.metrics["best_val_r2_score"] == max(b.data.metrics["val_r2_score"] for b in baselines.values())


def test_native_encoding_fixes_categories_from_the_training_rows():
    from tracking.features import category_levels, estimator_features

    train = pd.DataFrame({"code": [f"c{i % 300}" for i in range(900)] + ["rare"], "n": range(901)})
    levels = category_levels(train, ["code"], limit=255)
    assert len(levels["code"]) == 255 and "rare" not in levels["code"]  # HistGradientBoosting takes at most 255
    meta = {"kind": "table", "encoding": "native", "columns": ["code", "n"], "categorical": ["code"],
            "categories": {"code": ["a", "b"]}}
    x = estimator_features(pd.DataFrame({"code": ["b", "zzz", None], "n": ["1", "x", 3]}), meta)
    assert list(x["code"].cat.codes) == [1, -1, -1] and list(x["code"].cat.categories) == ["a", "b"]
    assert x["n"].tolist()[0] == 1.0 and np.isnan(x["n"].tolist()[1])
