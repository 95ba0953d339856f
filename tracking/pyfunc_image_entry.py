"""The pyfunc model for images, logged as code (MLflow's models-from-code) rather than cloudpickled."""

import mlflow

from tracking.models import KerasImageModel

mlflow.models.set_model(KerasImageModel())
