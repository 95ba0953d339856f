"""The logged model: raw rows in, labels or values out.

`network` is the Keras flavor of the trained network; `model` is a pyfunc that carries the
preprocessing fitted on the training split and the class labels, so that
`mlflow.pyfunc.load_model("runs:/<id>/model").predict(raw_rows)` works on rows as the source
had them.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings

import mlflow
import numpy as np
import pandas as pd

NETWORK_PATH = "network"
MODEL_PATH = "model"


def prepare_features(x, meta: dict, preprocessor=None) -> np.ndarray:
    """Raw rows (a DataFrame, or an image array) to what the network takes."""
    if meta["kind"] == "image":
        x = x.to_numpy() if isinstance(x, pd.DataFrame) else np.asarray(x)
        return x.reshape((-1, *meta["input_shape"])).astype("float32")
    if not isinstance(x, pd.DataFrame):
        x = pd.DataFrame(np.asarray(x), columns=meta["columns"])
    x = categorical_as_strings(x[meta["columns"]], meta["categorical"])
    x = numeric_as_numbers(x, [c for c in meta["columns"] if c not in meta["categorical"]])
    return np.asarray(preprocessor.transform(x), dtype="float32")


def numeric_as_numbers(x: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Strings in a numeric column become missing values, imputed as in training: raw rows hold
    them where the data was loaded with mixed_columns=numeric (`abc`, `n/a?`)."""
    mixed = [c for c in columns if not pd.api.types.is_numeric_dtype(x[c])]
    if not mixed:
        return x
    x = x.copy()
    for column in mixed:
        x[column] = pd.to_numeric(x[column], errors="coerce").astype("float64")
    return x


def categorical_as_strings(x: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """One type for the imputer and the encoder, whatever the source's dtype; NaN stays NaN."""
    x = x.copy()
    for column in columns:
        x[column] = x[column].astype(object).map(lambda v: np.nan if pd.isna(v) else str(v))
    return x


def encode_target(y, meta: dict) -> np.ndarray:
    """Class labels to what the loss wants (0/1 column for two classes, one-hot for more)."""
    if meta["task"] == "regression":
        return np.asarray(y, dtype="float32").reshape(-1, 1)
    codes = class_codes(y, meta["classes"])
    if len(meta["classes"]) == 2:
        return codes.astype("float32").reshape(-1, 1)
    return np.eye(len(meta["classes"]), dtype="float32")[codes]


def class_codes(y, classes: list) -> np.ndarray:
    codes = pd.Categorical(np.asarray(y), categories=classes).codes
    if (codes < 0).any():
        raise ValueError(f"labels not among the training classes {classes}")
    return codes.astype("int64")


def decode_output(output: np.ndarray, meta: dict) -> np.ndarray:
    if meta["task"] == "regression":
        return output.reshape(-1)
    classes = np.asarray(meta["classes"])
    if len(classes) == 2:
        return classes[(output.reshape(-1) >= 0.5).astype(int)]
    return classes[np.argmax(output, axis=1)]


def class_probabilities(output: np.ndarray, meta: dict) -> np.ndarray:
    if len(meta["classes"]) == 2:
        p = output.reshape(-1)
        return np.stack([1 - p, p], axis=1)
    return output


with warnings.catch_warnings():
    # MLflow asks for type hints on predict(); the signature is given explicitly instead,
    # since the input is a DataFrame for tables and an array for images.
    warnings.filterwarnings("ignore", message=".*type hints.*")

    class KerasPipelineModel(mlflow.pyfunc.PythonModel):
        """Preprocessing + Keras network + label decoding, as one MLflow model."""

        def load_context(self, context):
            import joblib

            with open(context.artifacts["meta"]) as f:
                self.meta = json.load(f)
            # Predicting needs no compile: the training metrics' code (pipelines.metrics) is not
            # among the model's code paths, and a serving environment lacks it.
            self.network = mlflow.keras.load_model(context.artifacts[NETWORK_PATH],
                                                   load_model_kwargs={"compile": False})
            path = context.artifacts.get("preprocessor")
            self.preprocessor = joblib.load(path) if path else None

        def predict(self, context, model_input, params=None):
            features = prepare_features(model_input, self.meta, self.preprocessor)
            return decode_output(self.network.predict(features, verbose=0), self.meta)


def log_model(network, meta: dict, preprocessor, input_example, pip_requirements: list[str]) -> str:
    """Log `network` (Keras flavor) and `model` (pyfunc over raw rows); return the model URI."""
    import joblib
    from mlflow.models import infer_signature

    network = _uncompiled(network)
    with tempfile.TemporaryDirectory() as tmp:
        network_dir = os.path.join(tmp, NETWORK_PATH)
        features = prepare_features(input_example, meta, preprocessor)
        mlflow.keras.save_model(
            network, network_dir,
            signature=infer_signature(features, network.predict(features, verbose=0)),
            pip_requirements=pip_requirements,
        )
        _add_input_example(network_dir, features)
        mlflow.log_artifacts(network_dir, NETWORK_PATH)
        artifacts = {NETWORK_PATH: network_dir, "meta": os.path.join(tmp, "meta.json")}
        with open(artifacts["meta"], "w") as f:
            json.dump(meta, f)
        if preprocessor is not None:
            artifacts["preprocessor"] = os.path.join(tmp, "preprocessor.joblib")
            joblib.dump(preprocessor, artifacts["preprocessor"])
        predictions = decode_output(network.predict(features, verbose=0), meta)
        info = _log_pyfunc(artifacts, input_example, predictions, pip_requirements, meta.get("coerced", []))
    return info.model_uri


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


def _log_pyfunc(artifacts, input_example, predictions, pip_requirements, coerced=()):
    from mlflow.models import infer_signature

    signature = infer_signature(input_example, predictions)
    if coerced:
        signature = _accept_strings(signature, coerced)
    return mlflow.pyfunc.log_model(
        name=MODEL_PATH,
        python_model=os.path.join(os.path.dirname(os.path.abspath(__file__)), "pyfunc_entry.py"),
        artifacts=artifacts,
        code_paths=[os.path.dirname(os.path.abspath(__file__))],
        signature=signature,
        input_example=input_example,
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
