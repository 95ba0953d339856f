"""How the default `fittrack train` scores against its own baselines, on the project's split.

For each case (data set, seed, extra train params) the real `fittrack train` command runs in a
throwaway tracking store; the train run's test score is read back beside the test score of every
baseline in the baselines run made for the same split (whatever baselines that run holds, by their
`baseline` param). The score is accuracy for classification, R² for regression and AUC for
breast_cancer. The margin is fittrack's score minus the best baseline's test score: the strictest
reading, the baseline best on test rather than the one chosen on validation.

    python benchmarks/quality.py --cases digits4 [--cases tables] [--param augment=0] [--json OUT]

Cases: digits4 (epochs=4; seeds 1, 2, 3, 42), digits (defaults; seeds 1, 2, 3, 42) and tables
(breast_cancer, wine, diabetes with defaults; seeds 1, 2, 3). Each run takes seconds to minutes
on 2 cores: run it on an otherwise idle machine, since the wall times depend on it (the scores do not).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CASES = {
    "digits4": [("builtin:digits", seed, {"epochs": 4}) for seed in (1, 2, 3, 42)],
    "digits": [("builtin:digits", seed, {}) for seed in (1, 2, 3, 42)],
    "tables": [(data, seed, {}) for data in ("builtin:breast_cancer", "builtin:wine", "builtin:diabetes")
               for seed in (1, 2, 3)],
}
# The bar for breast_cancer is AUC: accuracy on 114 test rows moves in steps of 0.009.
METRIC_OF = {"builtin:breast_cancer": "auc"}
TASK_METRIC = {"classification": "accuracy", "regression": "r2_score"}


def run_case(data: str, seed: int, params: dict) -> dict:
    """One `fittrack train` in a fresh store; its score and its baselines' scores."""
    with tempfile.TemporaryDirectory(prefix="fittrack-quality-") as folder:
        uri = f"sqlite:///{folder}/mlflow.db"
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "TF_CPP_MIN_LOG_LEVEL": "2",
               "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
        for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
            env.pop(name, None)
        extra = [a for k, v in params.items() for a in (f"--{k.replace('_', '-')}", str(v))]
        command = [sys.executable, "-m", "pipelines.cli", "train", "--data", data, "--seed", str(seed),
                   "--quiet", "--tensorboard", "false", *extra]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"{' '.join(command[2:])} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        return {"data": data, "seed": seed, "params": params, "seconds": round(seconds, 1), **_scores(uri, data)}


def _scores(uri: str, data: str) -> dict:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    (train,) = client.search_runs(experiments, "tags.`fittrack.step` = 'train'")
    metric = METRIC_OF.get(data) or TASK_METRIC[train.data.tags["fittrack.task"]]
    baselines_run_id = train.data.tags["fittrack.baselines_run_id"]
    found = client.search_runs(experiments, f"tags.`fittrack.step` = 'baseline' and "
                                            f"tags.`mlflow.parentRunId` = '{baselines_run_id}'")
    baselines = {b.data.params["baseline"]: b.data.metrics.get(f"test_{metric}") for b in found}
    scored = [v for v in baselines.values() if v is not None]
    fittrack = train.data.metrics[f"test_{metric}"]
    return {"metric": metric, "fittrack": fittrack, "baselines": baselines,
            "margin": fittrack - max(scored) if scored else None}


def machine() -> dict:
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = ""
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "cpu_count": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor(),
            "python": platform.python_version(), "commit": commit}


def _number(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def print_table(rows: list[dict]) -> None:
    names = sorted({n for r in rows for n in r["baselines"]})
    header = ["data", "seed", "params", "metric", "fittrack", *names, "margin", "seconds"]
    table = [[r["data"].removeprefix("builtin:"), str(r["seed"]),
              ",".join(f"{k}={v}" for k, v in r["params"].items()) or "-", r["metric"], _number(r["fittrack"]),
              *(_number(r["baselines"].get(n)) for n in names), _number(r["margin"]), f"{r['seconds']:.0f}"]
             for r in rows]
    widths = [max(len(c) for c in column) for column in zip(header, *table)]
    for line in [header, *table]:
        print("  ".join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))))
    print()
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["data"], json.dumps(r["params"], sort_keys=True)), []).append(r)
    for (data, params), group in groups.items():
        scores, margins = [r["fittrack"] for r in group], [r["margin"] for r in group if r["margin"] is not None]
        print(f"{data} {params}: fittrack mean {statistics.mean(scores):.4f} worst {min(scores):.4f}; "
              f"margin mean {statistics.mean(margins):+.4f} worst {min(margins):+.4f} over {len(group)} seeds")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", action="append", choices=sorted(CASES),
                        help="Which cases to run (repeatable); default digits4.")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="An extra train parameter for every case (repeatable), e.g. augment=0.")
    parser.add_argument("--json", metavar="OUT", help="Also write the machine and the rows to this file.")
    args = parser.parse_args()
    extra = dict(p.split("=", 1) for p in args.param)
    about = machine()
    print(f"{about['date']}  {about['cpu_count']} CPUs  {about['platform']}  {about['processor']}  "
          f"commit {about['commit']}", flush=True)
    rows = []
    for case in args.cases or ["digits4"]:
        for data, seed, params in CASES[case]:
            rows.append({"case": case, **run_case(data, seed, {**params, **extra})})
            r = rows[-1]
            print(f"  {case} {data} seed {seed}: {r['metric']} {r['fittrack']:.4f} margin {_number(r['margin'])} "
                  f"({r['seconds']:.0f} s)", file=sys.stderr, flush=True)
    print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": about, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
