"""How much training Optuna's pruning saves, and what a second worker adds.

On builtin:digits, with a fixed budget of trials and epochs per trial:
1. TPE with median pruning against random search without pruning, same seeds: total epochs
   trained, wall seconds, best validation accuracy, and that configuration's test accuracy;
2. one worker against two workers on a study of the same size: trials per minute.

Each study runs through the real `fittrack tune` command in a throwaway tracking store.

    python benchmarks/hpo_efficiency.py [--trials 20] [--epochs 10]

Takes about 15 minutes on 2 cores; run it on an otherwise idle machine (the seconds and
trials/min depend on it, the epoch counts do not).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tune(folder: str, *args: str) -> tuple[float, dict]:
    """Run one study; return (wall seconds, what its runs hold)."""
    os.makedirs(folder, exist_ok=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("MLFLOW_RUN_ID", None)
    command = [sys.executable, "-m", "pipelines.cli", "tune", "--quiet", "--data", "builtin:digits",
               "--metric", "val_accuracy", *args]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env={**env, "PYTHONPATH": ROOT}, capture_output=True, text=True)
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
    epochs = sum(len(client.get_metric_history(t.info.run_id, "val_loss")) for t in trials)
    # The study's own span, first trial start to last trial end: process start-up, the split and the
    # final test evaluation are the same for any number of workers and are left out of trials/min.
    span = (max(t.info.end_time for t in trials) - min(t.info.start_time for t in trials)) / 1000
    return {"epochs": epochs, "trials": len(trials), "span": span, "best_val": parent.data.metrics["best_value"],
            "test": parent.data.metrics["test_accuracy"],
            "pruned": int(parent.data.metrics["trials_pruned"])}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--throughput-trials", type=int, default=12)
    parser.add_argument("--throughput-epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="fittrack-hpo-")
    budget = ["--n-trials", str(args.trials), "--trial-epochs", str(args.epochs), "--seed", str(args.seed)]

    # fittrack tune's defaults: TPE, median pruning, and EarlyStopping (patience 3) inside each trial.
    pruned_s, pruned = tune(os.path.join(work, "tpe"), *budget, "--sampler", "tpe", "--pruner", "median")
    # Median pruning alone, every trial otherwise running its whole budget.
    median_s, median = tune(os.path.join(work, "median"), *budget, "--sampler", "tpe", "--pruner", "median",
                            "--trial-patience", str(args.epochs))
    # The reference: random search, no pruning and no early stopping; every trial runs every epoch.
    random_s, random = tune(os.path.join(work, "random"), *budget, "--sampler", "random", "--pruner", "none",
                            "--trial-patience", str(args.epochs))
    print(f"{args.trials} trials x at most {args.epochs} epochs, builtin:digits, metric val_accuracy")
    print(f"{'search':<42} {'epochs':>7} {'seconds':>8} {'best val':>9} {'its test':>9} {'pruned':>7}")
    for name, seconds, result in (("TPE + median pruning + patience 3 (default)", pruned_s, pruned),
                                  ("TPE + median pruning, no early stopping", median_s, median),
                                  ("random, no pruning, no early stopping", random_s, random)):
        print(f"{name:<42} {result['epochs']:>7} {seconds:>8.1f} {result['best_val']:>9.4f} "
              f"{result['test']:>9.4f} {result['pruned']:>7}")

    throughput = ["--n-trials", str(args.throughput_trials), "--trial-epochs", str(args.throughput_epochs),
                  "--sampler", "random", "--pruner", "none", "--seed", str(args.seed)]
    one_s, one = tune(os.path.join(work, "one"), *throughput, "--workers", "1")
    two_s, two = tune(os.path.join(work, "two"), *throughput, "--workers", "2")
    one_rate, two_rate = 60 * one["trials"] / one["span"], 60 * two["trials"] / two["span"]
    print(f"\n{args.throughput_trials} trials x {args.throughput_epochs} epochs, random sampler, no pruning")
    for name, seconds, result, rate in (("1 worker ", one_s, one, one_rate), ("2 workers", two_s, two, two_rate)):
        print(f"{name}: {result['trials']} trials, study {result['span']:.1f}s = {rate:.2f} trials/min "
              f"(whole command {seconds:.1f}s = {60 * result['trials'] / seconds:.2f} trials/min)")
    print(f"whole-command trials/min ratio 2 workers/1 worker: "
          f"{(two['trials'] / two_s) / (one['trials'] / one_s):.2f}")
    print(f"trials/min ratio 2 workers/1 worker: {two_rate / one_rate:.2f}")
    print(f"best val accuracy pruned - unpruned: {pruned['best_val'] - random['best_val']:+.4f}")
    print(f"epochs ratio median pruning alone/unpruned: {median['epochs'] / random['epochs']:.2f}")
    print(f"epochs ratio pruned/unpruned: {pruned['epochs'] / random['epochs']:.2f}")


if __name__ == "__main__":
    main()
