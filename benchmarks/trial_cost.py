"""What a tracked Optuna trial costs beyond a plain Keras fit of the same configuration.

On builtin:digits (the default CNN), each round fits the same configuration twice, in turn:
plainly (clear_session, build, compile with the loss and accuracy, fit with Keras's validation and
EarlyStopping only: what a Keras user writes) and as one trial of a real study through fittrack's
tune objective (its MLflow run, params, every epoch's metrics on the validation split and a
training sample, the best checkpoint, the diagnosis), at 1 and at 5 epochs. Medians over the
rounds give the trial's fixed cost (what it adds whatever its length) and its cost per epoch
beyond the plain fit's. A third fit, plain with the loss alone compiled, shows what the one
compiled accuracy costs the plain fit. Last line:
`trial fixed cost: F s, per-epoch overhead: P s (plain epoch: Q s)`.

    python benchmarks/trial_cost.py [--rounds 5]

About 6 minutes on 2 cores.
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

EPOCHS = (1, 5)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    import keras
    import mlflow
    import optuna

    from pipelines import train as training
    from pipelines.models import build_model, compile_model
    from pipelines.params import DataParams, TuneParams
    from pipelines.search_space import Fixed
    from pipelines.steps.split import reuse_or_run_split
    from pipelines.steps.tune import _objective

    folder = tempfile.mkdtemp(prefix="fittrack-trial-cost-")
    mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data_params = DataParams()
    with mlflow.start_run(run_name="trial-cost") as parent:
        split_run_id, _ = reuse_or_run_split(data_params)
    base = training.TrainConfig(patience=100)

    def objective(epochs):
        # One fixed configuration (a search space of constants): the trial fits what the plain fit does.
        space = {"learning_rate": Fixed(base.learning_rate)}
        params = TuneParams(trial_epochs=epochs, trial_patience=100)
        return _objective(params, base, space, split_run_id, parent.info.run_id, parent.info.experiment_id, folder)

    objectives = {e: objective(e) for e in EPOCHS}
    prepared = objectives[EPOCHS[0]].prepared
    kind = objectives[EPOCHS[0]].kind
    task, n_classes = prepared.meta["task"], len(prepared.meta["classes"])

    def plain(epochs, metrics=True):
        config = training.TrainConfig(**{**base.params(), "epochs": epochs})
        config.resolved_model = training.resolve_model(config, kind)
        keras.backend.clear_session()
        keras.utils.set_random_seed(base.seed)
        model = build_model(config, prepared.features["train"].shape[1:], task, n_classes,
                            image_scale=prepared.image_scale)
        compile_model(model, config, task, n_classes)  # the loss alone
        if metrics:
            model.compile(optimizer=model.optimizer, loss=model.loss,
                          metrics=["categorical_accuracy" if n_classes > 2 else "binary_accuracy"])
        model.fit(prepared.features["train"], prepared.targets["train"],
                  validation_data=(prepared.features["val"], prepared.targets["val"]), epochs=epochs,
                  batch_size=config.batch_size, verbose=0,
                  callbacks=[keras.callbacks.EarlyStopping(monitor=config.monitor, patience=100,
                                                           restore_best_weights=True)])

    def loss_only(epochs):
        plain(epochs, metrics=False)

    def trial(epochs):
        study = optuna.create_study(direction="minimize")
        study.optimize(objectives[epochs], n_trials=1)
        assert study.trials[0].state.name == "COMPLETE", study.trials[0]

    variants = (plain, trial, loss_only)
    seconds = {(v.__name__, e): [] for v in variants for e in EPOCHS}
    for variant in variants:  # one untimed warm-up each: the first fit of a process imports more
        variant(1)
    for r in range(args.rounds):
        for e in EPOCHS:
            order = variants if r % 2 == 0 else variants[::-1]
            for variant in order:
                start = time.perf_counter()
                variant(e)
                seconds[(variant.__name__, e)].append(time.perf_counter() - start)
    median = {k: statistics.median(v) for k, v in seconds.items()}
    print(f"builtin:digits, the default {kind} model, {args.rounds} rounds; median seconds:")
    for e in EPOCHS:
        print(f"  {e} epoch(s): plain {median[('plain', e)]:.2f}, trial {median[('trial', e)]:.2f}, "
              f"difference {median[('trial', e)] - median[('plain', e)]:+.2f}; plain with the loss only "
              f"{median[('loss_only', e)]:.2f}")
    low, high = EPOCHS
    d_low, d_high = (median[("trial", e)] - median[("plain", e)] for e in EPOCHS)
    per_epoch = (d_high - d_low) / (high - low)
    fixed = d_low - low * per_epoch
    plain_epoch = (median[("plain", high)] - median[("plain", low)]) / (high - low)
    bare_epoch = (median[("loss_only", high)] - median[("loss_only", low)]) / (high - low)
    bare_fixed = median[("loss_only", low)] - low * bare_epoch
    print(f"the plain fit's compiled accuracy: {median[('plain', low)] - low * plain_epoch - bare_fixed:+.2f} s a fit, "
          f"{plain_epoch - bare_epoch:+.3f} s an epoch (loss only: epoch {bare_epoch:.3f} s)")
    print(f"trial fixed cost: {fixed:.2f} s, per-epoch overhead: {per_epoch:.3f} s (plain epoch: {plain_epoch:.3f} s)")


if __name__ == "__main__":
    main()
