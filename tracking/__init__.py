"""What talks to MLflow (run helpers, Keras callbacks that log, datasets, the logged model, plots,
comparison, the server), and what the logged model and the steps share: the features stage, the
parameter fields, the error type. It imports nothing from pipelines/.

Modules import MLflow and Keras lazily where they can, so that `fittrack --help`
stays fast.
"""
