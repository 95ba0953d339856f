"""FittrackError for the steps: it lives in tracking/, which knows nothing of the steps."""

from tracking.errors import FittrackError

__all__ = ["FittrackError"]
