"""What talks to MLflow: run helpers, Keras callbacks that log, evaluation, models.

Modules import MLflow and Keras lazily where they can, so that `fittrack --help`
stays fast.
"""
