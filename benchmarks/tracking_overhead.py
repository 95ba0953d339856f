"""What fittrack's tracking costs a Keras fit, next to a plain fit and mlflow.keras.autolog.

The same CNN on builtin:digits is fitted plainly (compiled with its loss and accuracy, Keras's own
validation: what a Keras user writes), with fittrack's tracking (compiled with its loss only; the
validation split and a training sample scored at each epoch's end with every metric, logged
asynchronously, the best checkpoint as it improves, the NaN guard, and MLflow's system metrics
sampled in their own thread at TrainConfig's default interval, as every train and trial run has them),
the same without system metrics (`fittrack_nosys`), and with MLflow's autologging of the plain fit, in
turn, several rounds, into a throwaway SQLite store. Prints each variant's median fit seconds and the
ratios, of wall seconds and of the process's CPU seconds (every thread of it: Keras's, fittrack's
sender and sampler threads), which other work on a shared machine disturbs less than the wall
clock; the last line is `fittrack/plain median ratio: R` (wall).

    python benchmarks/tracking_overhead.py [--repeats 5] [--epochs 12] [--variants plain,fittrack,...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--variants", default="plain,fittrack,fittrack_nosys,autolog",
                        help="Comma-separated, from plain, fittrack, fittrack_nosys, autolog (plain and fittrack "
                             "always run).")
    args = parser.parse_args()

    import keras
    import mlflow

    from pipelines import data as data_sources
    from pipelines.models import build_model, compile_model
    from pipelines.split import SplitConfig, split
    from pipelines.train import TrainConfig
    from pipelines.fit import epoch_evaluation
    from tracking import system_metrics
    from tracking.callbacks import BestCheckpointLogger, MlflowMetricsLogger, TerminateOnNaN
    from tracking.features import Prepared, encode_target

    workdir = tempfile.mkdtemp(prefix="fittrack-bench-")
    mlflow.set_tracking_uri(f"sqlite:///{workdir}/mlflow.db")
    mlflow.set_experiment("tracking-overhead")
    dataset = data_sources.load("builtin:digits")
    parts = split(SplitConfig(), dataset)
    meta = {"task": "classification", "classes": sorted(set(dataset.y.tolist()))}
    x, y = parts["train"].x, encode_target(parts["train"].y, meta)
    xv, yv = parts["val"].x, encode_target(parts["val"].y, meta)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size)
    # The parts as pipelines.fit scores them (the images need no preprocessing).
    prepared = Prepared(features={"train": x, "val": xv}, targets={"train": y, "val": yv},
                        labels={name: parts[name].y for name in ("train", "val")}, meta=meta, preprocessor=None,
                        image_scale=16.0)
    config.resolved_model = "cnn"

    def fresh_model(plain=True):
        keras.utils.set_random_seed(0)
        model = build_model(config, x.shape[1:], "classification", 10, image_scale=16.0)
        compile_model(model, config, "classification", 10)
        if plain:
            model.compile(optimizer=model.optimizer, loss=model.loss, metrics=["categorical_accuracy"])
        return model

    def clock():
        return time.perf_counter(), time.process_time()

    def since(start):
        now = clock()
        return now[0] - start[0], now[1] - start[1]

    def fit(model, callbacks, validation=True):
        """(wall seconds, CPU seconds) of the fit."""
        start = clock()
        model.fit(x, y, validation_data=(xv, yv) if validation else None, epochs=args.epochs,
                  batch_size=args.batch_size, callbacks=callbacks, verbose=0)
        return since(start)

    def plain():
        return fit(fresh_model(), [])

    def fittrack(system=config.system_metrics):
        model = fresh_model(plain=False)
        with mlflow.start_run() as run:
            checkpoint = keras.callbacks.ModelCheckpoint(os.path.join(workdir, "best.keras"), monitor="val_loss",
                                                         mode="min", save_best_only=True)
            # As pipelines.fit and fit_tracked arrange them: the epoch's scores first, NaN guard, loggers.
            callbacks = [epoch_evaluation(config, prepared), checkpoint, BestCheckpointLogger(checkpoint, run.info.run_id, "min"),
                         TerminateOnNaN(), MlflowMetricsLogger(run.info.run_id, len(x))]
            # Timed with the sampling thread's start and its stop (the last sample, the flush), as the
            # train step and each trial run it around their fit.
            start = clock()
            with system_metrics.monitor(run.info.run_id, system, config.system_metrics_interval):
                fit(model, callbacks, validation=False)
            return since(start)

    def fittrack_nosys():
        return fittrack(system=False)

    def autolog():
        model = fresh_model()
        mlflow.keras.autolog(silent=True)
        try:
            with mlflow.start_run():
                return fit(model, [])
        finally:
            mlflow.keras.autolog(disable=True)

    variants = {"plain": plain, "fittrack": fittrack, "fittrack_nosys": fittrack_nosys, "autolog": autolog}
    chosen = {"plain", "fittrack", *args.variants.split(",")}
    variants = {name: run for name, run in variants.items() if name in chosen}
    for run in variants.values():  # warm-up: graph tracing and first-use costs, not timed
        run()
    times = {name: [] for name in variants}
    cpu = {name: [] for name in variants}
    for round_ in range(args.repeats):
        order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
        for name in order:
            wall, seconds = variants[name]()
            times[name].append(wall)
            cpu[name].append(seconds)
        print(f"round {round_ + 1}: " + ", ".join(f"{n} {times[n][-1]:.2f}s ({cpu[n][-1]:.2f} CPU s)" for n in variants),
              flush=True)

    medians = {name: statistics.median(values) for name, values in times.items()}
    cpu_medians = {name: statistics.median(values) for name, values in cpu.items()}
    print(f"\n{args.repeats} rounds of {args.epochs} epochs, builtin:digits CNN, batch {args.batch_size}; "
          f"system metrics every {config.system_metrics_interval:g} s")
    for name, value in medians.items():
        print(f"{name:<14} median {value:.3f}s  (min {min(times[name]):.3f}s, max {max(times[name]):.3f}s); "
              f"CPU median {cpu_medians[name]:.3f}s (min {min(cpu[name]):.3f}s, max {max(cpu[name]):.3f}s)")
    for name in ("fittrack", "fittrack_nosys", "autolog"):
        if name in cpu_medians:
            print(f"{name}/plain median CPU-seconds ratio: {cpu_medians[name] / cpu_medians['plain']:.3f}")
    for name in ("autolog", "fittrack_nosys"):
        if name in medians:
            print(f"{name}/plain median ratio: {medians[name] / medians['plain']:.3f}")
    if "fittrack_nosys" in medians:
        # Per round: the two fittrack fits of one round ran back to back, on the machine's same load.
        paired = [on / off for on, off in zip(times["fittrack"], times["fittrack_nosys"])]
        print(f"fittrack/fittrack_nosys median ratio: {medians['fittrack'] / medians['fittrack_nosys']:.3f} "
              f"(per round: {', '.join(f'{r:.3f}' for r in paired)})")
    print(f"fittrack/plain median ratio: {medians['fittrack'] / medians['plain']:.3f}")


if __name__ == "__main__":
    main()
