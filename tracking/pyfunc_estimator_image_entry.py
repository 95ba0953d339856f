"""A baseline's pyfunc model for images, logged as code (MLflow's models-from-code) rather than cloudpickled."""

import mlflow

from tracking.models import EstimatorImageModel

mlflow.models.set_model(EstimatorImageModel())
