"""How the default `fittrack train` scores against its own baselines, on the project's split.

For each case (data set, seed, extra train params) the real `fittrack train` command runs in a
throwaway tracking store; the train run's test score is read back beside the test score of every
baseline in the baselines run made for the same split (whatever baselines that run holds, by their
`baseline` param). The score is accuracy for classification, R² for regression and AUC for
breast_cancer. The margin is fittrack's score minus the best baseline's test score: the strictest
reading, the baseline best on test rather than the one chosen on validation. The second margin,
"vs chosen", is against the baseline the baselines run chose on validation (its `best_baseline`
tag), the bar the train run itself logs and the one a user could have deployed without the test set.

    python benchmarks/quality.py --cases digits4 [--cases tables] [--param augment=0] [--json OUT]

Cases: digits4 (epochs=4; seeds 1, 2, 3, 42), digits (defaults; seeds 1, 2, 3, 42), tables
(breast_cancer, wine, diabetes with defaults; seeds 1, 2, 3), large (a generated table of 60,000
rows with 3 categorical columns; seeds 1, 2, 3; its note is the gap to HistGradientBoosting,
fittrack / hgb - 1) and main (the whole `mlflow run .` job on builtin:digits; seeds 1, 2, 3, 42; its
fittrack score is the registered champion's, its one baseline the best one, its note the champion's
kind). Each run takes seconds to minutes on 2 cores: run it on an otherwise idle machine, since the
wall times depend on it (the scores do not).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The bar for tables of tens of thousands of rows: within 1% of HistGradientBoosting.
LARGE = "large.csv"
HGB = "hist_gradient_boosting"
CASES = {
    "digits4": [("builtin:digits", seed, {"epochs": 4}) for seed in (1, 2, 3, 42)],
    "digits": [("builtin:digits", seed, {}) for seed in (1, 2, 3, 42)],
    "tables": [(data, seed, {}) for data in ("builtin:breast_cancer", "builtin:wine", "builtin:diabetes")
               for seed in (1, 2, 3)],
    "large": [(LARGE, seed, {}) for seed in (1, 2, 3)],
    "main": [("builtin:digits", seed, {}) for seed in (1, 2, 3, 42)],
}
# The bar for breast_cancer is AUC: accuracy on 114 test rows moves in steps of 0.009.
METRIC_OF = {"builtin:breast_cancer": "auc"}
TASK_METRIC = {"classification": "accuracy", "regression": "r2_score"}


def run_case(data: str, seed: int, params: dict) -> dict:
    """One `fittrack train` in a fresh store; its score and its baselines' scores."""
    with tempfile.TemporaryDirectory(prefix="fittrack-quality-") as folder:
        if data == LARGE:
            write_large(os.path.join(folder, LARGE))
        extra = [a for k, v in params.items() for a in (f"--{k.replace('_', '-')}", str(v))]
        command = [sys.executable, "-m", "pipelines.cli", "train", "--data", data, "--seed", str(seed),
                   "--quiet", "--tensorboard", "false", *extra]
        uri, seconds = _timed(command, folder, ROOT)
        row = {"data": data, "seed": seed, "params": params, "seconds": round(seconds, 1), **_scores(uri, data)}
        hgb = row["baselines"].get(HGB)
        if data == LARGE and hgb:
            row["note"] = f"vs hgb {row['fittrack'] / hgb - 1:+.2%}"
        return row


def run_main(data: str, seed: int, params: dict) -> dict:
    """The whole main job as `mlflow run .` runs it, in a fresh store; the champion against the best baseline."""
    with tempfile.TemporaryDirectory(prefix="fittrack-quality-") as folder:
        # mlflow runs a local project inside its own folder, where the steps' new experiments would put
        # their artifacts (./mlruns): a copy of the working tree keeps them out of the checkout.
        project = os.path.join(folder, "project")
        files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.split("\0")
        for name in filter(None, files):
            if os.path.isfile(os.path.join(ROOT, name)):
                os.makedirs(os.path.dirname(os.path.join(project, name)), exist_ok=True)
                shutil.copy2(os.path.join(ROOT, name), os.path.join(project, name))
        extra = [a for k, v in {"seed": seed, **params}.items() for a in ("-P", f"{k}={v}")]
        uri, seconds = _timed([sys.executable, "-m", "mlflow", "run", project, "--env-manager", "local", *extra],
                              folder, project)
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        experiments = [e.experiment_id for e in client.search_experiments()]
        (run,) = [r for r in client.search_runs(experiments, "tags.`mlflow.project.entryPoint` = 'main'")
                  if "mlflow.parentRunId" not in r.data.tags]
        metrics, tags = run.data.metrics, run.data.tags
        return {"data": data, "seed": seed, "params": params, "seconds": round(seconds, 1), "metric": "accuracy",
                "fittrack": metrics["champion_test_accuracy"],
                "baselines": {tags.get("best_baseline") or "best": metrics["baseline_test_accuracy"]},
                "margin": metrics["champion_margin_test_accuracy"], "chosen": tags.get("best_baseline"),
                # main records only the baseline chosen on validation: both margins are against it.
                "margin_chosen": metrics["champion_margin_test_accuracy"], "note": f"champion {tags['champion_kind']}"}


def _timed(command: list[str], folder: str, code: str) -> tuple[str, float]:
    """Run the command in `folder` against a fresh sqlite store there; the store's URI and the wall time."""
    uri = f"sqlite:///{folder}/mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join(filter(None, [code, os.environ.get("PYTHONPATH")]))}
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(name, None)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(command[2:])} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return uri, seconds


def write_large(path: str, rows: int = 60_000) -> None:
    """A classification table with numeric and categorical columns, the same on every seed (the seed moves
    the split and the fit, as on the builtin sets)."""
    import numpy as np
    import pandas as pd
    from sklearn.datasets import make_classification

    # Unshuffled, the informative columns come first (x0 to x7); the rows are shuffled here instead.
    x, y = make_classification(n_samples=rows, n_features=12, n_informative=8, flip_y=0.03, shuffle=False,
                               random_state=0)
    order = np.random.default_rng(0).permutation(rows)
    table = pd.DataFrame(x[order], columns=[f"x{i}" for i in range(12)])
    # Three informative columns become categories (quantile bins with string labels), so a model must
    # treat them as categories to use them.
    for column, bins in (("x0", 8), ("x1", 20), ("x2", 5)):
        codes = pd.qcut(table.pop(column), bins, labels=False)
        table[f"c_{column}"] = [f"{column}_{c}" for c in codes]
    table["target"] = y[order]
    table.to_csv(path, index=False)


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
    # The baseline the project calls best (chosen on validation, as the train run's own margin is).
    chosen = client.get_run(baselines_run_id).data.tags.get("best_baseline")
    return {"metric": metric, "fittrack": fittrack, "baselines": baselines, "chosen": chosen,
            "margin": fittrack - max(scored) if scored else None,
            "margin_chosen": fittrack - baselines[chosen] if baselines.get(chosen) is not None else None}


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
    header = ["data", "seed", "params", "metric", "fittrack", *names, "margin", "vs chosen", "seconds", "note"]
    table = [[r["data"].removeprefix("builtin:"), str(r["seed"]),
              ",".join(f"{k}={v}" for k, v in r["params"].items()) or "-", r["metric"], _number(r["fittrack"]),
              *(_number(r["baselines"].get(n)) for n in names), _number(r["margin"]),
              _number(r.get("margin_chosen")) + (f" ({r['chosen']})" if r.get("chosen") else ""), f"{r['seconds']:.0f}",
              r.get("note", "")]
             for r in rows]
    widths = [max(len(c) for c in column) for column in zip(header, *table)]
    for line in [header, *table]:
        print("  ".join(c.ljust(w) if i < 4 or i == len(line) - 1 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(line, widths))).rstrip())
    print()
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r.get("case", ""), r["data"], json.dumps(r["params"], sort_keys=True)), []).append(r)
    for (case, data, params), group in groups.items():
        scores, margins = [r["fittrack"] for r in group], [r["margin"] for r in group if r["margin"] is not None]
        chosen = [r["margin_chosen"] for r in group if r.get("margin_chosen") is not None]
        against_chosen = (f"; vs chosen mean {statistics.mean(chosen):+.4f} worst {min(chosen):+.4f}" if chosen else "")
        seconds = [r["seconds"] for r in group]
        print(f"{case} {data} {params}: fittrack mean {statistics.mean(scores):.4f} worst {min(scores):.4f}; "
              f"margin mean {statistics.mean(margins):+.4f} worst {min(margins):+.4f}{against_chosen}; "
              f"seconds mean {statistics.mean(seconds):.0f} most {max(seconds):.0f} over {len(group)} seeds")


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
        run = run_main if case == "main" else run_case
        for data, seed, params in CASES[case]:
            rows.append({"case": case, **run(data, seed, {**params, **extra})})
            r = rows[-1]
            print(f"  {case} {data} seed {seed}: {r['metric']} {r['fittrack']:.4f} margin {_number(r['margin'])} "
                  f"vs chosen {_number(r.get('margin_chosen'))} "
                  f"({r['seconds']:.0f} s)", file=sys.stderr, flush=True)
    print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": about, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
