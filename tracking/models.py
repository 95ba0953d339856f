"""The logged model: raw rows in, labels or values out.

`network` is the Keras flavor of the trained network; `model` is a pyfunc that carries the
preprocessing fitted on the training split and the class labels, so that
`mlflow.pyfunc.load_model("runs:/<id>/model").predict(raw_rows)` works on rows as the source
had them. It encodes rows and decodes outputs with tracking.features, as training did.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings

import mlflow

from tracking.features import decode_output, prepare_features

NETWORK_PATH = "network"
MODEL_PATH = "model"


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
