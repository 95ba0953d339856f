"""A baseline's pyfunc model, logged as code (MLflow's models-from-code) rather than cloudpickled."""

import mlflow

from tracking.models import EstimatorPipelineModel

mlflow.models.set_model(EstimatorPipelineModel())
