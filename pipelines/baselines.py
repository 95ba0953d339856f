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
    from sklearn import metrics

    if task == "regression":
        pred = estimator.predict(x)
        return {"loss": metrics.mean_squared_error(y, pred), "mse": metrics.mean_squared_error(y, pred),
                "mae": metrics.mean_absolute_error(y, pred), "r2_score": metrics.r2_score(y, pred)}
    proba = estimator.predict_proba(x)
    pred = estimator.classes_[np.argmax(proba, axis=1)]
    out = {
        "loss": metrics.log_loss(y, proba, labels=estimator.classes_),
        "accuracy": metrics.accuracy_score(y, pred),
        "f1_score": (metrics.f1_score(y, pred, pos_label=estimator.classes_[-1]) if len(estimator.classes_) == 2
                     else metrics.f1_score(y, pred, average="macro")),
    }
    if len(set(np.asarray(y).tolist())) > 1:
        if len(estimator.classes_) == 2:
            out["auc"] = metrics.roc_auc_score(y, proba[:, 1])
        else:
            out["auc"] = metrics.roc_auc_score(y, proba, multi_class="ovr", labels=estimator.classes_)
    return out


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
