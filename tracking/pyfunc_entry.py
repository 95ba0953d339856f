"""The pyfunc model, logged as code (MLflow's models-from-code) rather than cloudpickled."""

import mlflow

from tracking.models import KerasPipelineModel

mlflow.models.set_model(KerasPipelineModel())
