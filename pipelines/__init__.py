"""fittrack's pipeline: the steps (pipelines/steps/: split, baselines, train, tune, register, main,
reproduce), what they are made of (data, split, models, fit, evaluate, tune, transfer), and the
commands (cli, with the compare and server commands beside it).

Each step is a function under a thin click command. Importing this package
must stay cheap: TensorFlow and Keras are imported inside the functions that train.
"""

from pipelines.errors import FittrackError

__all__ = ["FittrackError"]
