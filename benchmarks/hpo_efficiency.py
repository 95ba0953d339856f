"""Tuning side by side on one split: fittrack tune, KerasTuner's Hyperband, Optuna random search.

On builtin:digits (fittrack's default split for --seed), with the same number of trials and the
same epoch cap per trial, each search runs as its own command in its own process, one after the
other, and is timed whole (process start, data, search, the best model's test score):

1. `fittrack tune` with its defaults (guided by val_accuracy here, as KerasTuner is), every trial a
   tracked MLflow run in a throwaway store;
2. KerasTuner's Hyperband (factor 3, max_epochs the same cap) over a small CNN space of its own,
   untracked, the tool a Keras user would otherwise pick;
3. `fittrack tune` with Optuna's random sampler and no pruning or early stopping: the reference.

For each it prints trials, epochs trained, wall seconds, best validation accuracy, the test
accuracy of the best model, and the epochs trained until a validation accuracy first reached
KerasTuner's best (in the order the epochs ran; "never" where it did not). Then one worker against
two on one study (PostgreSQL at 127.0.0.1:5432 where it answers, else SQLite): trials per minute.

    pip install keras-tuner==1.4.8   # benchmark-only: pip install -e ".[bench]"
    python benchmarks/hpo_efficiency.py [--trials 30] [--epochs 15] [--seed 42] [--skip-workers]

The last line: `fittrack/keras_tuner epochs ratio R1 wall ratio R2 best val A vs B`. About 10
minutes on 2 cores; run it on an otherwise idle machine (the seconds depend on it, the epochs not).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POSTGRES = "postgresql://postgres@127.0.0.1:5432"


def tune(folder: str, *args: str) -> tuple[float, dict]:
    """Run one `fittrack tune` study in a fresh store; return (wall seconds, what its runs hold)."""
    os.makedirs(folder, exist_ok=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": ROOT}
    env.pop("MLFLOW_RUN_ID", None)
    command = [sys.executable, "-m", "pipelines.cli", "tune", "--quiet", "--data", "builtin:digits",
               "--metric", "val_accuracy", *args]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"fittrack tune failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return seconds, _summary(env["MLFLOW_TRACKING_URI"])


def _summary(uri: str) -> dict:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("Default")
    parent = client.search_runs([experiment.experiment_id], "tags.`fittrack.step` = 'tune'")[0]
    trials = client.search_runs([experiment.experiment_id], "tags.`fittrack.step` = 'trial'", max_results=10000)
    # Every epoch of every trial, in the order it was logged: what "epochs to reach" counts along.
    curve = sorted((m.timestamp, m.value) for t in trials
                   for m in client.get_metric_history(t.info.run_id, "val_accuracy"))
    # The study's own span, first trial start to last trial end: process start-up, the split and the
    # final test evaluation are the same for any number of workers and are left out of trials/min.
    span = (max(t.info.end_time for t in trials) - min(t.info.start_time for t in trials)) / 1000
    return {"epochs": len(curve), "trials": len(trials), "span": span, "best_val": parent.data.metrics["best_value"],
            "test": parent.data.metrics["test_accuracy"], "pruned": int(parent.data.metrics["trials_pruned"]),
            "curve": [value for _, value in curve]}


def keras_tuner(folder: str, seed: int, epochs: int) -> tuple[float, dict]:
    """KerasTuner's Hyperband in a process of its own, timed whole as the fittrack commands are."""
    out = os.path.join(folder, "keras_tuner.json")
    command = [sys.executable, os.path.abspath(__file__), "--keras-tuner-process", out, "--seed", str(seed),
               "--epochs", str(epochs)]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT},
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"KerasTuner failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    with open(out) as f:
        return seconds, json.load(f)


def _keras_tuner_process(out: str, seed: int, epochs: int) -> None:
    import keras
    import keras_tuner
    import numpy as np

    from pipelines.params import DataParams
    from pipelines.split import split

    params = DataParams(data="builtin:digits", seed=seed)
    dataset = params.load()
    parts = split(params.split_config, dataset)
    x = {name: np.asarray(part.x, dtype="float32")[..., None] for name, part in parts.items()}
    y = {name: np.asarray(part.y) for name, part in parts.items()}
    scale = float(x["train"].max())
    curve = []

    class Record(keras.callbacks.Callback):
        # KerasTuner deep-copies callbacks for every trial; the list is shared by all the copies.
        def on_epoch_end(self, epoch, logs=None):
            curve.append(float(logs["val_accuracy"]))

    def build(hp):
        model = keras.Sequential([keras.Input(x["train"].shape[1:]), keras.layers.Rescaling(1.0 / scale)])
        for i in range(hp.Int("conv_blocks", 1, 2)):
            model.add(keras.layers.Conv2D(hp.Choice(f"filters_{i}", [16, 32, 64]), 3, padding="same",
                                          activation="relu"))
            model.add(keras.layers.MaxPooling2D(2))
        model.add(keras.layers.Flatten())
        model.add(keras.layers.Dropout(hp.Float("dropout", 0.0, 0.5, step=0.1)))
        model.add(keras.layers.Dense(hp.Choice("units", [32, 64, 128]), activation="relu"))
        model.add(keras.layers.Dense(10, activation="softmax"))
        model.compile(optimizer=keras.optimizers.Adam(hp.Float("learning_rate", 1e-4, 1e-2, sampling="log")),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    tuner = keras_tuner.Hyperband(build, objective="val_accuracy", max_epochs=epochs, factor=3, seed=seed,
                                  directory=os.path.dirname(out), project_name="hyperband", overwrite=True)
    tuner.search(x["train"], y["train"], validation_data=(x["val"], y["val"]), callbacks=[Record()], verbose=0)
    best = tuner.get_best_models(1)[0]
    test = float(best.evaluate(x["test"], y["test"], verbose=0)[1])
    with open(out, "w") as f:
        json.dump({"trials": len(tuner.oracle.trials), "epochs": len(curve), "best_val": max(curve), "test": test,
                   "pruned": 0, "curve": curve}, f)


def epochs_to_reach(curve: list, target: float):
    for i, value in enumerate(curve, start=1):
        if value >= target - 1e-9:
            return i
    return None


@contextlib.contextmanager
def workers_storage():
    """A fresh PostgreSQL database where the server answers (the issue's setting), dropped
    afterwards; else "" (the default SQLite storage)."""
    try:
        import psycopg

        name = f"fittrack_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
    except Exception:  # noqa: BLE001 (no server: the default SQLite storage)
        yield ""
        return
    try:
        yield f"{POSTGRES}/{name}"
    finally:
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def workers(work: str, args) -> None:
    """One worker against two on one study (PostgreSQL where it answers): trials per minute."""
    throughput = ["--n-trials", str(args.throughput_trials), "--trial-epochs", str(args.throughput_epochs),
                  "--sampler", "random", "--pruner", "none", "--seed", str(args.seed)]
    with workers_storage() as storage:
        if storage:
            throughput += ["--storage", storage]
        one_s, one = tune(os.path.join(work, "one"), *throughput, "--workers", "1", "--study", "one")
        two_s, two = tune(os.path.join(work, "two"), *throughput, "--workers", "2", "--study", "two")
    one_rate, two_rate = 60 * one["trials"] / one["span"], 60 * two["trials"] / two["span"]
    print(f"\n{args.throughput_trials} trials x {args.throughput_epochs} epochs, random sampler, no pruning, "
          f"{'PostgreSQL' if storage else 'SQLite'} storage")
    for name, seconds, result, rate in (("1 worker ", one_s, one, one_rate), ("2 workers", two_s, two, two_rate)):
        print(f"{name}: {result['trials']} trials, study {result['span']:.1f}s = {rate:.2f} trials/min "
              f"(whole command {seconds:.1f}s)")
    print(f"trials/min ratio 2 workers/1 worker: {two_rate / one_rate:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--throughput-trials", type=int, default=12)
    parser.add_argument("--throughput-epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--skip-workers", action="store_true")
    parser.add_argument("--workers-only", action="store_true", help="Only one worker against two.")
    parser.add_argument("--keras-tuner-process", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.keras_tuner_process:
        return _keras_tuner_process(args.keras_tuner_process, args.seed, args.epochs)
    work = tempfile.mkdtemp(prefix="fittrack-hpo-")
    if args.workers_only:
        return workers(work, args)
    budget = ["--n-trials", str(args.trials), "--trial-epochs", str(args.epochs), "--seed", str(args.seed)]

    fittrack_s, fittrack = tune(os.path.join(work, "fittrack"), *budget)
    os.makedirs(os.path.join(work, "keras_tuner"))
    kt_s, kt = keras_tuner(os.path.join(work, "keras_tuner"), args.seed, args.epochs)
    random_s, random = tune(os.path.join(work, "random"), *budget, "--sampler", "random", "--pruner", "none",
                            "--trial-patience", str(args.epochs))

    target = kt["best_val"]
    print(f"at most {args.trials} trials x {args.epochs} epochs, builtin:digits (split seed {args.seed}), "
          f"val_accuracy; epochs to reach: until a validation accuracy >= KerasTuner's best {target:.4f}")
    print(f"{'search':<34} {'trials':>6} {'epochs':>7} {'seconds':>8} {'best val':>9} {'its test':>9} "
          f"{'to reach':>9}")
    for name, seconds, result in (("fittrack tune (defaults)", fittrack_s, fittrack),
                                  ("KerasTuner Hyperband (factor 3)", kt_s, kt),
                                  ("Optuna random, no pruning", random_s, random)):
        reach = epochs_to_reach(result["curve"], target)
        print(f"{name:<34} {result['trials']:>6} {result['epochs']:>7} {seconds:>8.1f} {result['best_val']:>9.4f} "
              f"{result['test']:>9.4f} {reach if reach else 'never':>9}")

    if not args.skip_workers:
        workers(work, args)
    print(f"fittrack/keras_tuner epochs ratio {fittrack['epochs'] / kt['epochs']:.2f} wall ratio "
          f"{fittrack_s / kt_s:.2f} best val {fittrack['best_val']:.4f} vs {kt['best_val']:.4f}")


if __name__ == "__main__":
    main()
