"""The steps, one module each, as MLflow runs: split, baselines, train, tune, register, main, reproduce.

Each holds a `run_*` function that opens (or joins) the step's run under a thin click command in
pipelines/cli.py; the pieces they share (data, split, fit, tuning, metrics) live one level up.
"""
