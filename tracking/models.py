"""The logged model: raw rows in, labels or values out.

`network` is the Keras flavor of the trained network; `model` is a pyfunc that carries the
preprocessing fitted on the training split and the class labels, so that
`mlflow.pyfunc.load_model("runs:/<id>/model").predict(raw_rows)` works on rows as the source
had them. It encodes rows and decodes outputs with tracking.features, as training did.

A baseline's run holds the same `model` over a scikit-learn estimator (`estimator`, the
scikit-learn flavor) instead of a network: the same raw rows in, the same labels out.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings

import mlflow
import numpy as np
import pandas as pd

from tracking.features import decode_output, estimator_features, prepare_features

NETWORK_PATH = "network"
ESTIMATOR_PATH = "estimator"
MODEL_PATH = "model"


# predict()'s type hint, for MLflow 3 (mlflow/types/type_hints.py): pd.DataFrame and np.ndarray are
# the hints it validates and converts nothing by (no list[...] or pydantic schema): what the model
# takes is its logged signature's to say, which MLflow enforces before predict() and which hands
# predict() a DataFrame for a table's column signature and an array for an image's tensor one.
# Rows as the source had them need no conversion of MLflow's; a missing hint only earns a warning.
# The class logged is the one whose hint says what its signature hands it (_entry).


class KerasPipelineModel(mlflow.pyfunc.PythonModel):
    """Preprocessing + Keras network + label decoding, as one MLflow model: a table's rows."""

    def load_context(self, context):
        self.meta, self.preprocessor = _load_meta(context.artifacts)
        # Predicting needs no compile: the training metrics' code (pipelines.metrics) is not
        # among the model's code paths, and a serving environment lacks it.
        self.network = mlflow.keras.load_model(context.artifacts[NETWORK_PATH],
                                               load_model_kwargs={"compile": False})

    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        return self._outputs(model_input)

    def _outputs(self, model_input) -> np.ndarray:
        features = prepare_features(model_input, self.meta, self.preprocessor)
        return decode_output(self.network.predict(features, verbose=0), self.meta)


class KerasImageModel(KerasPipelineModel):
    """The same for images: an array of them."""

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        return self._outputs(model_input)


class EstimatorPipelineModel(mlflow.pyfunc.PythonModel):
    """Preprocessing + scikit-learn estimator + label decoding, as one MLflow model: a table's rows."""

    def load_context(self, context):
        self.meta, self.preprocessor = _load_meta(context.artifacts)
        self.estimator = mlflow.sklearn.load_model(context.artifacts[ESTIMATOR_PATH])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        return self._outputs(model_input)

    def _outputs(self, model_input) -> np.ndarray:
        return estimator_output(self.estimator, estimator_features(model_input, self.meta, self.preprocessor),
                                self.meta)


class EstimatorImageModel(EstimatorPipelineModel):
    """The same for images: an array of them."""

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        return self._outputs(model_input)


def _entry(family: str, meta: dict) -> str:
    """The models-from-code file (beside this one) that sets the model class for `meta`'s input."""
    return f"pyfunc_{family}{'image_' if meta.get('kind') == 'image' else ''}entry.py"


def _load_meta(artifacts: dict) -> tuple[dict, object]:
    import joblib

    with open(artifacts["meta"]) as f:
        meta = json.load(f)
    path = artifacts.get("preprocessor")
    return meta, (joblib.load(path) if path else None)


def _save_meta(folder: str, meta: dict, preprocessor) -> dict:
    """meta.json and the fitted preprocessor in `folder`, as the pyfunc's artifacts."""
    import joblib

    artifacts = {"meta": os.path.join(folder, "meta.json")}
    with open(artifacts["meta"], "w") as f:
        json.dump(meta, f)
    if preprocessor is not None:
        artifacts["preprocessor"] = os.path.join(folder, "preprocessor.joblib")
        joblib.dump(preprocessor, artifacts["preprocessor"])
    return artifacts


def estimator_output(estimator, features, meta: dict) -> np.ndarray:
    """A fitted estimator's labels or values, decoded from its probabilities as the network's output
    is (tracking.features.decode_output): `meta["classes"]` in the order of `estimator.classes_`."""
    if meta["task"] == "regression":
        return decode_output(np.asarray(estimator.predict(features)), meta)
    proba = estimator.predict_proba(features)
    return decode_output(proba[:, 1] if len(meta["classes"]) == 2 else proba, meta)


def log_model(network, meta: dict, preprocessor, input_example, pip_requirements: list[str]) -> str:
    """Log `network` (Keras flavor) and `model` (pyfunc over raw rows); return the model URI."""
    from mlflow.models import infer_signature

    network = _uncompiled(network)
    with tempfile.TemporaryDirectory() as tmp:
        network_dir = os.path.join(tmp, NETWORK_PATH)
        features = prepare_features(input_example, meta, preprocessor)
        output = network.predict(features, verbose=0)
        mlflow.keras.save_model(network, network_dir, signature=infer_signature(features, output),
                                pip_requirements=pip_requirements)
        _add_input_example(network_dir, features)
        mlflow.log_artifacts(network_dir, NETWORK_PATH)
        artifacts = {NETWORK_PATH: network_dir, **_save_meta(tmp, meta, preprocessor)}
        predictions = decode_output(output, meta)
        info = _log_pyfunc(artifacts, input_example, predictions, pip_requirements, meta.get("coerced", []),
                           entry=_entry("", meta))
    return info.model_uri


def log_estimator(estimator, meta: dict, preprocessor, input_example, pip_requirements: list[str]) -> str:
    """Log a fitted scikit-learn baseline: `estimator` (scikit-learn flavor, taking the encoded
    features) and `model` (pyfunc over raw rows, as log_model's); return the model URI.

    `meta`: tracking.features.estimator_meta's, how the estimator takes rows; `input_example`: a
    few raw rows."""
    from threadpoolctl import threadpool_limits

    if meta["task"] != "regression":
        meta = {**meta, "classes": [c.item() if isinstance(c, np.generic) else c for c in estimator.classes_]}
    with tempfile.TemporaryDirectory() as tmp:
        estimator_dir = os.path.join(tmp, ESTIMATOR_PATH)
        _save_estimator(estimator, estimator_dir, pip_requirements)
        mlflow.log_artifacts(estimator_dir, ESTIMATOR_PATH)
        artifacts = {ESTIMATOR_PATH: estimator_dir, **_save_meta(tmp, meta, preprocessor)}
        with threadpool_limits(1, user_api="openmp"):  # a few rows: threads would only wait on each other
            predictions = estimator_output(estimator, estimator_features(input_example, meta, preprocessor), meta)
        # The example gives the signature but is not logged: MLflow would load the model and
        # predict on it to check it, half a second a baseline.
        info = _log_pyfunc(artifacts, input_example, predictions, pip_requirements, meta.get("coerced", []),
                           entry=_entry("estimator_", meta), log_example=False)
    return info.model_uri


def _save_estimator(estimator, path: str, pip_requirements: list[str]) -> None:
    """The scikit-learn flavor, pickled. Not skops, MLflow's default: the pyfunc beside it loads
    the fitted preprocessor with joblib anyway, and skops took 2 s to save and 0.7 s to load the
    gradient boosting of digits (1,000 trees) where pickle takes 0.03 s."""
    import logging

    mlflow_sklearn = logging.getLogger("mlflow.sklearn")
    level = mlflow_sklearn.level
    mlflow_sklearn.setLevel(logging.ERROR)  # its caution against pickle on every save, answered above
    try:
        mlflow.sklearn.save_model(estimator, path, serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_PICKLE,
                                  pip_requirements=pip_requirements)
    finally:
        mlflow_sklearn.setLevel(level)


def input_example(raw_x, n: int = 5):
    """The first `n` raw rows (a DataFrame or an image array): the pyfunc's input example."""
    return raw_x.iloc[:n] if hasattr(raw_x, "iloc") else raw_x[:n]


def _uncompiled(network):
    """The same layers and weights without the training configuration: a compiled model saves its
    metrics, fittrack's own classes (pipelines.metrics), which a process without fittrack cannot
    load, and a served or fine-tuned network needs none of it."""
    # Not keras.models.clone_model: it compiles the copy as the original was.
    copy = type(network).from_config(network.get_config())
    copy.set_weights(network.get_weights())
    return copy


def _add_input_example(model_dir: str, example) -> None:
    """Add an input example after saving: mlflow.keras.save_model(input_example=...) writes the
    example before it creates the model folder and raises FileNotFoundError (MLflow 3.17.2)."""
    from mlflow.models import Model
    from mlflow.models.utils import _save_example

    model = Model.load(model_dir)
    _save_example(model, example, model_dir)
    model.save(os.path.join(model_dir, "MLmodel"))


def _log_pyfunc(artifacts, input_example, predictions, pip_requirements, coerced=(), entry="pyfunc_entry.py",
                log_example=True):
    """`entry`: the file next to this one that sets the model (models-from-code)."""
    from mlflow.models import infer_signature

    signature = infer_signature(input_example, predictions)
    if coerced:
        signature = _accept_strings(signature, coerced)
    with warnings.catch_warnings():
        if not log_example:
            # The signature is given; MLflow's advice to log an example as well is declined on purpose.
            warnings.filterwarnings("ignore", message=".*input example was not provided.*")
        return mlflow.pyfunc.log_model(
            name=MODEL_PATH,
            python_model=os.path.join(os.path.dirname(os.path.abspath(__file__)), entry),
            artifacts=artifacts,
            code_paths=[os.path.dirname(os.path.abspath(__file__))],
            signature=signature,
            input_example=input_example if log_example else None,
            pip_requirements=pip_requirements,
        )


def _accept_strings(signature, columns):
    """Numeric columns that held strings in the source (`abc`, `n/a?`, read as missing) take them in
    raw rows too: MLflow's schema check would refuse them before predict() could read them as missing."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    inputs = Schema([ColSpec(AnyType(), spec.name, required=False) if spec.name in columns else spec
                     for spec in signature.inputs.inputs])
    return ModelSignature(inputs=inputs, outputs=signature.outputs)
