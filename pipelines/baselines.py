"""Simple baselines on the same split, from scikit-learn: a dummy model, a linear one, a kernel SVM
and histogram gradient boosting."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from tracking.features import ENCODINGS, estimator_features, estimator_meta, flat_features
from tracking.parts import PARTS


@dataclass
class BaselineResult:
    name: str
    estimator: str  # the estimator's class
    metrics: dict  # val_* and test_* scores
    model: object = None  # the fitted estimator
    meta: dict = field(default_factory=dict)  # how it takes raw rows (tracking.features.estimator_meta)
    params: dict = field(default_factory=dict)  # its own settings worth a run param
    fit_metrics: dict = field(default_factory=dict)  # how the fit went: fit_seconds, boosting rounds


def fit_baselines(data, prepared, seed: int) -> list[BaselineResult]:
    """Fit on the training part; score on validation and test. `data`: the split (a SplitData);
    `prepared`: its features (tracking.features.Prepared). The gradient boosting takes the raw
    columns; the others what the network sees."""
    from threadpoolctl import threadpool_limits

    metas = {encoding: estimator_meta(prepared, encoding) for encoding in ENCODINGS}
    inputs = {encoding: _inputs(data, prepared, meta) for encoding, meta in metas.items()}
    y = prepared.labels
    results = []
    for name, (estimator, encoding) in _candidates(data.task, y["train"], seed).items():
        x = inputs[encoding]
        # One OpenMP thread: on a busy machine (2 cores shared with the suite's workers or a
        # tracking server) gradient boosting's threads wait on each other, 10 times slower
        # on digits than one thread.
        with threadpool_limits(1, user_api="openmp"):
            started = time.perf_counter()
            if name == HGB:
                # Early stopping on the split's own validation part, as the network's.
                estimator.fit(x["train"], y["train"], X_val=x["val"], y_val=y["val"])
            else:
                estimator.fit(x["train"], y["train"])
            fit_metrics = {"fit_seconds": time.perf_counter() - started}
            metrics = {}
            for part in ("val", "test"):
                scores = score(estimator, data.task, x[part], y[part])
                metrics.update({f"{part}_{k}": v for k, v in scores.items()})
        kind = type(getattr(estimator, "estimator", None) or estimator).__name__
        params = {}
        if name == HGB:
            params = {"max_iter": estimator.max_iter, "learning_rate": estimator.learning_rate,
                      "n_iter_no_change": estimator.n_iter_no_change, "early_stopping_on": "val"}
            fit_metrics["n_iter"] = estimator.n_iter_
        results.append(BaselineResult(name, kind, metrics, estimator, metas[encoding], params, fit_metrics))
    return results


HGB = "hist_gradient_boosting"
# A kernel SVM fits in time quadratic in the rows: past this it would outlast the network's fit.
SVM_MAX_ROWS = 20_000
# Enough boosting rounds that early stopping, not this cap, ends the fit on the builtin sets.
HGB_MAX_ITER = 1000


def _candidates(task: str, y_train, seed: int) -> dict:
    """name -> (unfitted estimator, the encoding it takes)."""
    from sklearn.dummy import DummyClassifier, DummyRegressor
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.svm import SVR

    # validation_fraction=None: fit() gets the validation part (X_val), so none of the training rows is held out.
    boosting = {"early_stopping": True, "validation_fraction": None, "max_iter": HGB_MAX_ITER,
                "categorical_features": "from_dtype", "random_state": seed}
    if task == "regression":
        candidates = {"dummy": DummyRegressor(strategy="mean"), "linear": Ridge(alpha=1.0), "svm": SVR(),
                      HGB: HistGradientBoostingRegressor(**boosting)}
    else:
        candidates = {
            "dummy": DummyClassifier(strategy="prior"),
            "linear": LogisticRegression(max_iter=2000, random_state=seed),
            "svm": _svm_classifier(y_train, seed),
            HGB: HistGradientBoostingClassifier(**boosting),
        }
    if len(y_train) > SVM_MAX_ROWS or candidates["svm"] is None:
        del candidates["svm"]
    return {name: (estimator, "native" if name == HGB else "network") for name, estimator in candidates.items()}


def _inputs(data, prepared, meta: dict) -> dict:
    """Each part as the estimator for `meta`'s encoding takes it; the network's features are reused
    where that encoding starts from them."""
    if meta["encoding"] == "native" and meta["kind"] != "image":
        return {part: estimator_features(data.parts[part].x, meta) for part in PARTS}
    return {part: flat_features(prepared.features[part], meta) for part in PARTS}


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


def dummy_loss(task: str, y_train, label_smoothing: float = 0.0) -> float:
    """The loss a constant prediction reaches on the training targets, under the network's objective:
    with labels smoothed as Keras does (each class's target moved `label_smoothing` of the way to
    1 / classes) the best constant is the smoothed class shares, and its loss their entropy."""
    y_train = np.asarray(y_train)
    if task == "regression":
        return float(np.var(y_train.astype(float)))
    _, counts = np.unique(y_train, return_counts=True)
    return _smoothed_entropy(counts / counts.sum(), label_smoothing)


def loss_floor(task: str, n_classes: int, label_smoothing: float = 0.0) -> float:
    """The loss a perfect prediction still has: with smoothed labels the best prediction is the
    smoothed target itself, and its cross-entropy that target's entropy (0 without smoothing)."""
    if task == "regression" or label_smoothing == 0 or n_classes < 2:
        return 0.0
    return _smoothed_entropy(np.eye(n_classes)[0], label_smoothing)


def _smoothed_entropy(p: np.ndarray, label_smoothing: float) -> float:
    """The entropy of class shares `p` smoothed as Keras smooths labels: towards 1 / classes (a
    binary target, one sigmoid, towards 1/2). A single class stays as it is."""
    if len(p) > 1:
        p = p * (1 - label_smoothing) + label_smoothing / len(p)
    return float(-(p * np.log(p)).sum())
