"""fittrack's pipeline steps: split, train (and later tune, register).

Each step is a pure function under a thin click command. Importing this package
must stay cheap: TensorFlow and Keras are imported inside the functions that train.
"""

from pipelines.errors import FittrackError

__all__ = ["FittrackError"]
