"""A split as MLflow sees it: run artifacts, dataset inputs with digests, sizes and balance."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field

import mlflow
import numpy as np
import pandas as pd

from tracking.parts import PARTS, Part, class_balance

SPLIT_DIR = "split"
SUMMARY_FILE = "summary.json"
CONTEXTS = {"train": "training", "val": "validation", "test": "testing"}


@dataclass
class SplitData:
    """What the train step reads back from a split run."""

    parts: dict[str, Part]
    target: str
    task: str
    kind: str
    source: str
    digest: str
    classes: list = field(default_factory=list)
    run_id: str | None = None
    coerced: list = field(default_factory=list)  # numeric columns whose strings were read as missing

    @property
    def sizes(self) -> dict[str, int]:
        return {name: len(part) for name, part in self.parts.items()}


def log_split(data: SplitData) -> None:
    """Log the three parts into the active run, as files and as dataset inputs."""
    with tempfile.TemporaryDirectory() as tmp:
        datasets = {}
        for name, part in data.parts.items():
            path = os.path.join(tmp, _filename(name, data.kind))
            if data.kind == "image":
                np.savez_compressed(path, x=part.x, y=part.y)
                ds = mlflow.data.from_numpy(part.x, targets=part.y, source=dataset_source(data.source), name=name)
            else:
                frame = _frame(part, data.target)
                frame.to_parquet(path, index=False)
                ds = mlflow.data.from_pandas(frame, source=dataset_source(data.source), targets=data.target, name=name)
            datasets[name] = ds
        summary = {
            "target": data.target, "task": data.task, "kind": data.kind, "source": data.source,
            "digest": data.digest, "classes": [_plain(c) for c in data.classes], "sizes": data.sizes,
            "coerced": list(data.coerced),
            "class_balance": (
                {n: class_balance(p.y) for n, p in data.parts.items()} if data.task == "classification" else {}
            ),
        }
        with open(os.path.join(tmp, SUMMARY_FILE), "w") as f:
            json.dump(summary, f, indent=2)
        mlflow.log_artifacts(tmp, SPLIT_DIR)
    log_dataset_inputs(datasets, summary)


def log_dataset_inputs(datasets: dict, summary: dict) -> None:
    for name, ds in datasets.items():
        tags = {"size": str(summary["sizes"][name])}
        if summary["class_balance"]:
            tags["class_balance"] = json.dumps(summary["class_balance"][name])
        mlflow.log_input(ds, context=CONTEXTS[name], tags=tags)


def load_split(run_id: str) -> SplitData:
    """Download a split run's parts (steps pass data through artifacts, not imports)."""
    from mlflow.exceptions import MlflowException

    from tracking.errors import FittrackError

    try:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=SPLIT_DIR)
    except (MlflowException, OSError) as exc:
        if "RESOURCE_DOES_NOT_EXIST" not in str(getattr(exc, "error_code", "")) and not isinstance(exc, OSError):
            raise
        raise FittrackError(f"split run {run_id!r} not found, or it holds no split (a split run's {SPLIT_DIR}/ "
                            f"artifacts)") from None
    with open(os.path.join(local, SUMMARY_FILE)) as f:
        summary = json.load(f)
    parts = {}
    for name in PARTS:
        path = os.path.join(local, _filename(name, summary["kind"]))
        if summary["kind"] == "image":
            with np.load(path, allow_pickle=False) as arrays:
                parts[name] = Part(x=arrays["x"], y=arrays["y"])
        else:
            frame = pd.read_parquet(path)
            parts[name] = Part(x=frame.drop(columns=[summary["target"]]), y=frame[summary["target"]].to_numpy())
    return SplitData(
        parts=parts, target=summary["target"], task=summary["task"], kind=summary["kind"],
        source=summary["source"], digest=summary["digest"], classes=summary["classes"], run_id=run_id,
        coerced=summary.get("coerced", []),
    )


def dataset_inputs(data: SplitData) -> dict:
    """The parts as MLflow datasets, for the runs that train on them."""
    out = {}
    for name, part in data.parts.items():
        if data.kind == "image":
            out[name] = mlflow.data.from_numpy(part.x, targets=part.y, source=dataset_source(data.source), name=name)
        else:
            out[name] = mlflow.data.from_pandas(
                _frame(part, data.target), source=dataset_source(data.source), targets=data.target, name=name
            )
    return out


def dataset_source(source: str):
    """An MLflow dataset source for a builtin set (scikit-learn's loader) or a local file."""
    import warnings

    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    if source.startswith("builtin:"):
        return CodeDatasetSource({"loader": f"sklearn.datasets.load_{source.split(':', 1)[1]}", "data": source})
    with warnings.catch_warnings():
        # Two resolvers both claim local paths; either gives the same local-file source.
        warnings.simplefilter("ignore", UserWarning)
        return resolve_dataset_source(source)


def _frame(part: Part, target: str) -> pd.DataFrame:
    frame = part.x.copy()
    frame[target] = part.y
    return frame


def _filename(name: str, kind: str) -> str:
    return f"{name}.npz" if kind == "image" else f"{name}.parquet"


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value
