"""How fast an `mlflow server` takes epoch metrics from concurrent clients: SQLite against PostgreSQL.

Starts two real `mlflow server`s (SQLite in a temporary folder; PostgreSQL on 127.0.0.1:5432, user
postgres, in a database made for the benchmark and dropped after). For each K in --clients, K
client processes each open a run and log E epochs of M metrics as fittrack's callback does (one
`log_batch` of M metrics per epoch, step = epoch), here synchronously so that each call is timed.
Prints, per backend and K, metrics per second (all clients together, from a common start), the
p50/p99 latency of one call, errors, and whether every metric arrived (each run's history holds E
points per metric, none missing, none twice); then PostgreSQL/SQLite ratios side by side; the last
line says which backend to use when.

    python benchmarks/server_ingest.py [--clients 1,4,16] [--epochs 20] [--metrics 10]
        [--sqlite-workers 1] [--postgres-workers 4]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
POSTGRES = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,4,16", help="comma-separated numbers of concurrent clients")
    parser.add_argument("--epochs", type=int, default=20, help="log_batch calls per client (one per epoch)")
    parser.add_argument("--metrics", type=int, default=10, help="metrics per epoch (per log_batch)")
    parser.add_argument("--sqlite-workers", type=int, default=1, help="server worker processes, SQLite backend")
    parser.add_argument("--postgres-workers", type=int, default=4, help="server worker processes, PostgreSQL")
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    clients = [int(k) for k in args.clients.split(",")]
    backends = args.backends.split(",")
    for value, name in ((args.epochs, "--epochs"), (args.metrics, "--metrics"), (min(clients), "--clients")):
        if value < 1:
            raise SystemExit(f"{name} must be >= 1, got {value}")
    if set(backends) - {"sqlite", "postgresql"}:
        raise SystemExit(f"--backends takes sqlite and/or postgresql, got {args.backends!r}")

    # Clients fork from a server that imported MLflow once and never opened an HTTP session.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["mlflow", "mlflow.tracking"])
    workdir = tempfile.mkdtemp(prefix="fittrack-ingest-")
    database = f"fittrack_ingest_{uuid.uuid4().hex[:8]}"
    servers, results = {}, []
    try:
        if "sqlite" in backends:
            servers["sqlite"] = _start_server(f"sqlite:///{workdir}/mlflow.db", workdir, "sqlite", args.sqlite_workers)
        if "postgresql" in backends:
            _postgres(f'CREATE DATABASE "{database}"')
            uri = f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
            servers["postgresql"] = _start_server(uri, workdir, "postgresql", args.postgres_workers)
        for name, server in servers.items():
            server["url"] = _wait_for_health(server)
            print(f"{name}: mlflow server up in {server['boot_s']:.1f}s ({server['workers']} workers)", flush=True)

        from mlflow import MlflowClient

        for k in clients:
            for name, server in servers.items():
                client = MlflowClient(tracking_uri=server["url"])
                experiment_id = client.create_experiment(f"ingest-k{k}-{uuid.uuid4().hex[:6]}")
                row = _round(context, server["url"], experiment_id, k, args.epochs, args.metrics)
                row.update(backend=name, workers=server["workers"], k=k)
                row.update(_check_complete(client, row.pop("run_ids"), args.epochs, args.metrics))
                results.append(row)
                print(_format(row), flush=True)
    finally:
        for server in servers.values():
            _stop(server)
        if "postgresql" in backends:
            _postgres(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"\n{args.epochs} epochs x {args.metrics} metrics per client, synchronous log_batch per epoch; "
          f"{os.cpu_count()} CPUs shared by clients, servers and database")
    print(f"{'backend':<11}{'workers':>8}{'K':>4}{'metrics/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}  complete")
    for row in results:
        print(_format(row))
    by = {(r["backend"], r["k"]): r for r in results}
    if len(servers) == 2:
        print()
        for k in clients:
            s, p = by[("sqlite", k)], by[("postgresql", k)]
            print(f"K={k:<3} postgresql/sqlite metrics/s ratio: {p['rate'] / s['rate']:.2f}   "
                  f"p99 ratio: {p['p99'] / s['p99']:.2f}")
    print(_summary(by, clients, servers))


def _client(url, experiment_id, index, epochs, metrics, start, queue):
    """One training process: a run, then one log_batch of `metrics` metrics per epoch."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri=url)
    run_id = client.create_run(experiment_id, run_name=f"client-{index}", tags={"fittrack.step": "train"}).info.run_id
    names = [f"metric_{m}" for m in range(metrics)]
    latencies, errors = [], 0
    start.wait()
    for epoch in range(epochs):
        batch = [Metric(name, _value(index, epoch, m), int(time.time() * 1000), epoch) for m, name in enumerate(names)]
        began = time.perf_counter()
        try:
            client.log_batch(run_id, metrics=batch)
        except Exception:
            errors += 1
        latencies.append(time.perf_counter() - began)
    finished = time.perf_counter()
    client.set_terminated(run_id)
    queue.put((run_id, latencies, errors, finished))


def _value(index, epoch, m):
    return index * 1000.0 + epoch + m / 100.0


def _round(context, url, experiment_id, k, epochs, metrics):
    start = context.Event()
    queue = context.Queue()
    processes = [context.Process(target=_client, args=(url, experiment_id, i, epochs, metrics, start, queue))
                 for i in range(k)]
    for process in processes:
        process.start()
    _wait_until_runs_exist(url, experiment_id, k, processes)
    began = time.perf_counter()
    start.set()
    outcomes = [queue.get(timeout=600) for _ in processes]
    for process in processes:
        process.join()
    seconds = max(o[3] for o in outcomes) - began
    latencies = sorted(t for o in outcomes for t in o[1])
    return {"run_ids": [o[0] for o in outcomes], "seconds": seconds, "rate": k * epochs * metrics / seconds,
            "p50": _percentile(latencies, 50) * 1000, "p99": _percentile(latencies, 99) * 1000,
            "errors": sum(o[2] for o in outcomes)}


def _wait_until_runs_exist(url, experiment_id, k, processes, timeout=300):
    """Every client has imported MLflow and opened its run: start them together."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(client.search_runs([experiment_id], max_results=k)) >= k:
            time.sleep(0.2)  # the last one has still to reach start.wait()
            return
        if any(p.exitcode not in (None, 0) for p in processes):
            raise SystemExit("a client process failed before logging")
        time.sleep(0.2)
    raise SystemExit(f"{k} clients did not open their runs within {timeout} s")


def _check_complete(client, run_ids, epochs, metrics):
    """Each run's history: exactly one point per epoch for every metric, with the value sent."""
    missing = duplicated = wrong = 0
    for run_id in run_ids:
        index = int(client.get_run(run_id).info.run_name.split("-")[1])
        for m in range(metrics):
            history = client.get_metric_history(run_id, f"metric_{m}")
            steps = [point.step for point in history]
            missing += len(set(range(epochs)) - set(steps))
            duplicated += len(steps) - len(set(steps))
            wrong += sum(point.value != _value(index, point.step, m) for point in history)
    return {"missing": missing, "duplicated": duplicated, "wrong": wrong}


def _percentile(sorted_values, q):
    return sorted_values[min(len(sorted_values) - 1, round(q / 100 * (len(sorted_values) - 1)))]


def _format(row):
    ok = not (row["missing"] or row["duplicated"] or row["wrong"])
    complete = "yes" if ok else f"NO: {row['missing']} missing, {row['duplicated']} twice, {row['wrong']} wrong"
    return (f"{row['backend']:<11}{row['workers']:>8}{row['k']:>4}{row['rate']:>11.0f}{row['p50']:>9.1f}"
            f"{row['p99']:>9.1f}{row['errors']:>8}  {complete}")


def _summary(by, clients, servers):
    if len(servers) < 2:
        return "summary: only one backend measured; run both to compare"
    wins = {k: by[("postgresql", k)]["rate"] / by[("sqlite", k)]["rate"] for k in clients}
    lost = [k for k in clients if any(by[(b, k)][f] for b in servers for f in ("missing", "duplicated", "wrong"))]
    parts = ", ".join(f"K={k}: {'PostgreSQL' if r > 1.05 else 'SQLite' if r < 0.95 else 'either'} ({r:.2f}x)"
                      for k, r in wins.items())
    warning = f"; METRICS LOST at K={','.join(map(str, lost))}" if lost else "; every metric arrived"
    return f"summary: faster backend by concurrent clients (postgresql/sqlite metrics/s): {parts}{warning}"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(backend_uri, workdir, name, workers):
    port = _free_port()
    log = open(os.path.join(workdir, f"{name}-server.log"), "w")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri, "--serve-artifacts",
         "--artifacts-destination", os.path.join(workdir, f"{name}-artifacts"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", str(workers)],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    return {"process": process, "log": log, "port": port, "workers": workers, "began": time.monotonic()}


def _wait_for_health(server, timeout=240):
    url = f"http://127.0.0.1:{server['port']}"
    while time.monotonic() < server["began"] + timeout:
        if server["process"].poll() is not None:
            with open(server["log"].name) as f:
                raise SystemExit(f"mlflow server exited with {server['process'].returncode}:\n{f.read()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    server["boot_s"] = time.monotonic() - server["began"]
                    return url
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"{url}/health did not answer within {timeout} s")


def _stop(server):
    server["process"].terminate()
    try:
        server["process"].wait(timeout=30)
    except subprocess.TimeoutExpired:
        server["process"].kill()
        server["process"].wait()
    server["log"].close()


def _postgres(statement):
    import psycopg

    with psycopg.connect(POSTGRES, autocommit=True) as connection:
        connection.execute(statement)


if __name__ == "__main__":
    main()
