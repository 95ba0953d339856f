"""The one exception type that means "the user's input is wrong"."""


class FittrackError(Exception):
    """A mistake in input, reported as one line naming the bad value.

    The CLI turns it into a non-zero exit without a traceback and marks the
    MLflow run FAILED with the message in its `error` tag.
    """
