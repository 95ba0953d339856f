"""Keras callbacks that log to MLflow, one a module as Keras keeps them: every epoch's metrics,
the best checkpoint as it improves (or once, from memory, at the end), the last epochs' checkpoints,
the validation and training rows scored in inference mode, the NaN guard, and Keras's
BackupAndRestore made safe against a kill mid-save."""

from tracking.callbacks.backup_and_restore import BackupAndRestore
from tracking.callbacks.best_checkpoint import BEST_CHECKPOINT, BEST_INFO, CHECKPOINT_DIR, BestCheckpointLogger
from tracking.callbacks.best_weights import BestWeightsLogger
from tracking.callbacks.last_checkpoints import LAST_DIR, LastCheckpoints, last_checkpoint_name
from tracking.callbacks.metrics_logger import MlflowMetricsLogger
from tracking.callbacks.tensorboard import TensorBoard
from tracking.callbacks.terminate_on_nan import TerminateOnNaN
from tracking.callbacks.epoch_evaluation import EpochEvaluation, EvaluatedPart, training_sample

__all__ = ["BEST_CHECKPOINT", "BackupAndRestore", "BEST_INFO", "CHECKPOINT_DIR", "BestCheckpointLogger",
           "BestWeightsLogger", "LAST_DIR", "LastCheckpoints", "last_checkpoint_name", "MlflowMetricsLogger",
           "TensorBoard", "TerminateOnNaN", "EpochEvaluation",
           "EvaluatedPart", "training_sample"]
