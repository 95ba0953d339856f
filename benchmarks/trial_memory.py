"""Whether a long study's process grows: resident memory of `fittrack tune` trial after trial.

Runs the real `fittrack tune` command (a small MLP on builtin:iris, no pruning, a few epochs per
trial) in a throwaway store and samples the process's resident set size (VmRSS, Linux's
/proc/PID/status) every 0.2 s. Each trial run's end time in MLflow says which sample follows which
trial; the table shows the memory after trials 1, 10, 25 and the last. The last line:
`resident memory after trial 1: A MB, after trial N: B MB, growth: G MB`.

    python benchmarks/trial_memory.py [--trials 50] [--epochs 2]

About 5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def resident_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="fittrack-memory-")
    uri = f"sqlite:///{folder}/mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT}
    env.pop("MLFLOW_RUN_ID", None)
    command = [sys.executable, "-m", "pipelines.cli", "tune", "--quiet", "--data", "builtin:iris",
               "--n-trials", str(args.trials), "--trial-epochs", str(args.epochs), "--pruner", "none"]
    process = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    samples = []  # (unix ms, MB)
    while process.poll() is None:
        mb = resident_mb(process.pid)
        if mb is not None:
            samples.append((time.time() * 1000, mb))
        time.sleep(0.2)
    if process.returncode != 0:
        sys.exit(f"fittrack tune failed:\n{process.stderr.read()[-3000:]}")

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    trials = client.search_runs(["0"], "tags.`fittrack.step` = 'trial'", max_results=10000,
                                order_by=["attributes.end_time ASC"])
    after = []
    for run in trials:
        later = [mb for at, mb in samples if at >= run.info.end_time]
        after.append(later[0] if later else samples[-1][1])
    print(f"{len(trials)} trials x {args.epochs} epochs, builtin:iris, {len(samples)} samples of VmRSS")
    for n in sorted({1, 10, 25, len(after)}):
        if n <= len(after):
            print(f"after trial {n:>3}: {after[n - 1]:8.1f} MB")
    print(f"peak: {max(mb for _, mb in samples):.1f} MB")
    print(f"resident memory after trial 1: {after[0]:.1f} MB, after trial {len(after)}: {after[-1]:.1f} MB, "
          f"growth: {after[-1] - after[0]:+.1f} MB")


if __name__ == "__main__":
    main()
