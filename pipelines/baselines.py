"""Simple baselines on the same split, from scikit-learn: a dummy model, a linear one and a kernel SVM."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class BaselineResult:
    name: str
    estimator: str
    metrics: dict  # val_* and test_* scores


def fit_baselines(task: str, features: dict, targets: dict, seed: int) -> list[BaselineResult]:
    """Fit on the training part; score on validation and test. `features` are what the network sees."""
    from sklearn.dummy import DummyClassifier, DummyRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.svm import SVR

    x_train = _flat(features["train"])
    if task == "regression":
        candidates = {"dummy": DummyRegressor(strategy="mean"), "linear": Ridge(alpha=1.0), "svm": SVR()}
    else:
        candidates = {
            "dummy": DummyClassifier(strategy="prior"),
            "linear": LogisticRegression(max_iter=2000, random_state=seed),
            "svm": _svm_classifier(targets["train"], seed),
        }
    if len(x_train) > SVM_MAX_ROWS or candidates["svm"] is None:
        del candidates["svm"]
    results = []
    for name, estimator in candidates.items():
        estimator.fit(x_train, targets["train"])
        metrics = {}
        for part in ("val", "test"):
            scores = score(estimator, task, _flat(features[part]), targets[part])
            metrics.update({f"{part}_{k}": v for k, v in scores.items()})
        kind = type(getattr(estimator, "estimator", None) or estimator).__name__
        results.append(BaselineResult(name, kind, metrics))
    return results


# A kernel SVM fits in time quadratic in the rows: past this it would outlast the network's fit.
SVM_MAX_ROWS = 20_000


def _svm_classifier(y_train, seed: int):
    """An RBF SVM with calibrated probabilities (for log loss and AUC), or None with too few rows per class."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import SVC

    folds = min(5, int(np.unique(np.asarray(y_train), return_counts=True)[1].min()))
    if folds < 2:
        return None
    return CalibratedClassifierCV(SVC(random_state=seed), cv=folds, ensemble=False)


def score(estimator, task: str, x, y) -> dict:
    """The metrics a Keras run logs, defined the same way (pipelines.metrics); loss is log loss or mse."""
    from sklearn import metrics

    from pipelines.metrics import classification_scores, regression_scores

    if task == "regression":
        scores = regression_scores(y, estimator.predict(x))
        return {"loss": scores["mse"], **scores}
    # predict_proba's columns are estimator.classes_, sorted, as the network's are.
    proba = estimator.predict_proba(x)
    return {"loss": metrics.log_loss(y, proba, labels=estimator.classes_),
            **classification_scores(y, proba, estimator.classes_)}


def dummy_loss(task: str, y_train) -> float:
    """The loss a constant prediction reaches on the training targets."""
    y_train = np.asarray(y_train)
    if task == "regression":
        return float(np.var(y_train.astype(float)))
    _, counts = np.unique(y_train, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def _flat(x):
    return x.reshape(len(x), -1)
