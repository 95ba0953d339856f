"""Transfer learning: a training run that starts from a registered model or a run's checkpoint.

`init_model` names where the Keras network comes from. Its layers up to its last Dense layer (the
output) are reused under a new head sized for this task; the reused body is frozen for
`freeze_epochs` while the head learns, then every layer is fine-tuned at a lower learning rate.

The new head starts as a linear probe (`head_init="probe"`): a logistic (or ridge) regression
fitted on the frozen body's features of the training split, then fine-tuned: LP-FT, Kumar et al.,
"Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution", ICLR 2022. A
randomly initialised head learns slowly by gradient descent on a small data set (a few optimizer
steps per epoch), and while it does its gradients disturb the reused layers. On builtin digits,
0-4 to 5-9, a random head reached a validation accuracy no sooner than the same network trained
from scratch; the probe reached it sooner (tests/test_transfer.py).

A registered version's source run holds the network twice: `network` (MLflow's Keras flavor,
the best epoch) and `checkpoints/best.keras`; the registered `model` itself is a pyfunc around it.
MLflow and Keras are imported inside the functions so that `fittrack --help` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pipelines.errors import FittrackError
from tracking.fields import check_fields, param

__all__ = ["HEAD_INITS", "Phase", "Transfer", "TransferConfig", "fit_probe", "resolve", "set_body_trainable",
           "with_new_head"]

NETWORK_PATH = "network"  # as tracking.models logs it
CHECKPOINT_PATH = "checkpoints/best.keras"  # as tracking.callbacks logs it
ACCEPTED = "models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/checkpoints/best.keras or a train run id"
# The learning rate once the whole network trains, when none is given: small steps keep what
# the reused layers learnt from being wiped out by the new head's first, large gradients.
FINE_TUNE_DIVISOR = 10.0
HEAD_INITS = ("probe", "random")
# The probe sees at most this many training rows: enough for a linear model, and it bounds the
# time spent before the first epoch on a large data set.
PROBE_MAX_ROWS = 20_000


@dataclass
class TransferConfig:
    """What the user asked for (logged as the run's params when `init_model` is set)."""

    init_model: str = param("", "Start from this model's layers under a new output head: models:/NAME@ALIAS, "
                            "models:/NAME/VERSION, runs:/RUN_ID/checkpoints/best.keras or a train run id (its best "
                            "checkpoint). The network then comes from it, not from --model, --layers, --units.")
    freeze_epochs: int = param(3, "With --init-model: epochs that train only the new head before every layer is "
                               "fine-tuned (0: fine-tune every layer from the start; --epochs or more: never).", low=0)
    fine_tune_learning_rate: float = param(0.0, "With --init-model: the learning rate once every layer trains (0: "
                                           f"--learning-rate / {FINE_TUNE_DIVISOR:g}).", low=0)
    head_init: str = param("probe", "With --init-model: probe starts the new head as a linear model fitted on the "
                           "reused layers' features of the training split (LP-FT); random as Keras initialises it.",
                           choices=HEAD_INITS)

    def __post_init__(self):
        check_fields(self)

    def fine_tune_rate(self, learning_rate: float) -> float:
        return float(self.fine_tune_learning_rate) or learning_rate / FINE_TUNE_DIVISOR


@dataclass
class Phase:
    """One Keras fit of a transfer run: up to epoch `epochs` (Keras's `epochs`, exclusive)."""

    epochs: int
    learning_rate: float
    train_body: bool


@dataclass
class Transfer:
    """A resolved `init_model`: the run (and model version) its network comes from, and the phases."""

    config: TransferConfig
    run_id: str
    artifact_path: str  # NETWORK_PATH, or a .keras file such as CHECKPOINT_PATH
    name: str = ""  # registered model name, for models:/ URIs
    version: str = ""
    network: object = None  # the Keras network, once `load` ran

    @property
    def network_uri(self) -> str:
        return f"runs:/{self.run_id}/{self.artifact_path}"

    def tags(self) -> dict:
        tags = {"fittrack.init_model": self.config.init_model, "fittrack.init_run_id": self.run_id,
                "fittrack.init_network_uri": self.network_uri}
        if self.name:
            tags.update({"fittrack.init_model_name": self.name, "fittrack.init_model_version": self.version})
        return tags

    def params(self, learning_rate: float) -> dict:
        return {"init_model": self.config.init_model, "freeze_epochs": self.config.freeze_epochs,
                "fine_tune_learning_rate": self.config.fine_tune_rate(learning_rate),
                "head_init": self.config.head_init}

    def phases(self, epochs: int, learning_rate: float) -> list[Phase]:
        """Head only for `freeze_epochs`, then everything; `freeze_epochs` >= `epochs` never unfreezes."""
        fine_tune = Phase(epochs, self.config.fine_tune_rate(learning_rate), train_body=True)
        frozen = min(self.config.freeze_epochs, epochs)
        if frozen == 0:
            return [fine_tune]
        head_only = Phase(frozen, learning_rate, train_body=False)
        return [head_only] if frozen == epochs else [head_only, fine_tune]

    def load(self, input_shape: tuple) -> None:
        """Load the network and check that it takes this data's features (after TensorFlow is set up)."""
        import mlflow

        if self.artifact_path.endswith(".keras"):
            import keras

            local = mlflow.artifacts.download_artifacts(run_id=self.run_id, artifact_path=self.artifact_path)
            network = keras.saving.load_model(local, compile=False)
        else:
            network = mlflow.keras.load_model(self.network_uri, load_model_kwargs={"compile": False})
        if len(network.inputs) != 1:
            raise FittrackError(f"init_model {self.config.init_model!r} takes {len(network.inputs)} inputs; "
                                f"fittrack feeds a network one")
        expected = tuple(network.inputs[0].shape[1:])
        given = tuple(input_shape)
        if len(expected) != len(given) or any(e is not None and e != g for e, g in zip(expected, given)):
            raise FittrackError(f"init_model {self.config.init_model!r} takes inputs of shape {expected}, "
                                f"but this data's features have shape {given}")
        self.network = network


def resolve(config: TransferConfig | None, client=None) -> Transfer | None:
    """Find the run behind `init_model`, before any run opens; None without `init_model`."""
    if config is None:
        return None
    uri = config.init_model.strip()
    if not uri:
        return None
    from mlflow import MlflowClient

    config = replace(config, init_model=uri)

    client = client or MlflowClient()
    if uri.startswith("models:/"):
        transfer = _from_registry(client, config, uri)
    elif uri.startswith("runs:/"):
        run_id, _, path = uri[len("runs:/"):].partition("/")
        transfer = Transfer(config, run_id, path.strip("/") or NETWORK_PATH)
    elif not any(c in uri for c in ":/\\"):
        transfer = Transfer(config, uri, CHECKPOINT_PATH)
    else:
        raise FittrackError(f"init_model {uri!r} is not a model URI or run id; give {ACCEPTED}")
    _check_run(client, transfer)
    return transfer


def _from_registry(client, config: TransferConfig, uri: str) -> Transfer:
    from mlflow.exceptions import MlflowException

    reference = uri[len("models:/"):]
    if "@" in reference:
        name, _, alias = reference.partition("@")
        registered = _registered_model(client, name, uri)
        version = registered.aliases.get(alias)
        if version is None:
            known = ", ".join(sorted(registered.aliases)) or "none"
            raise FittrackError(f"init_model {uri!r}: registered model {name!r} has no alias {alias!r} "
                                f"(its aliases: {known})")
    elif "/" in reference:
        name, _, version = reference.rpartition("/")
        _registered_model(client, name, uri)
    else:
        # models:/m-... is a logged model's URI, as a train run prints it for its `model`.
        try:
            run_id = client.get_logged_model(reference).source_run_id
        except MlflowException:
            run_id = None
        if not run_id:
            raise FittrackError(f"init_model {uri!r} names no version or alias; give models:/{reference}@ALIAS "
                                f"or models:/{reference}/VERSION")
        return Transfer(config, run_id, NETWORK_PATH)
    try:
        found = client.get_model_version(name, str(version))
    except MlflowException:
        versions = sorted((v.version for v in client.search_model_versions(f"name = '{_quote(name)}'")), key=int)
        raise FittrackError(f"init_model {uri!r}: registered model {name!r} has no version {version!r} "
                            f"(its versions: {', '.join(map(str, versions)) or 'none'})") from None
    run_id = found.run_id or (found.tags or {}).get("source_run_id")
    if not run_id:
        raise FittrackError(f"init_model {uri!r}: version {found.version} of {name!r} has no source run "
                            f"holding its Keras network")
    return Transfer(config, run_id, NETWORK_PATH, name=name, version=str(found.version))


def _registered_model(client, name: str, uri: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException:
        known = ", ".join(sorted(m.name for m in client.search_registered_models(max_results=20))) or "none"
        raise FittrackError(f"init_model {uri!r}: no registered model named {name!r} "
                            f"(registered: {known})") from None


def _check_run(client, transfer: Transfer) -> None:
    """The run exists and holds the artifact, so a typo fails now rather than after the split."""
    import posixpath

    from mlflow.exceptions import MlflowException

    uri, path = transfer.config.init_model, transfer.artifact_path
    try:
        client.get_run(transfer.run_id)
    except MlflowException:
        raise FittrackError(f"init_model {uri!r}: run {transfer.run_id!r} not found in the tracking store") from None
    # A .keras file, or an MLflow Keras model folder (which holds an MLmodel file).
    wanted, folder = (path, posixpath.dirname(path)) if path.endswith(".keras") else (f"{path}/MLmodel", path)
    if wanted not in {a.path for a in client.list_artifacts(transfer.run_id, folder or None)}:
        raise FittrackError(f"init_model {uri!r}: run {transfer.run_id!r} has no Keras network at {path!r} "
                            f"(fittrack train runs log {NETWORK_PATH!r} and {CHECKPOINT_PATH!r})")


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


def with_new_head(network, task: str, n_classes: int, target_mean: float = 0.0, target_std: float = 1.0):
    """`network`'s layers up to its last Dense layer (every member's, for an ensemble), under a
    new output head for this task.

    Returns (model, body): `body` lists the reused layers, which a head-only phase freezes.
    """
    import keras

    from pipelines.models import head_input, output_head

    if task not in ("classification", "regression"):
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
    features = head_input(keras, network)
    if features is None:
        raise FittrackError(f"the init model {network.name!r} has no Dense output layer to replace")
    outputs = output_head(keras, features, task, n_classes, target_mean, target_std)
    model = keras.Model(network.inputs, outputs, name=network.name)
    body = [layer for layer in model.layers if any(layer is reused for reused in network.layers)]
    return model, body


def set_body_trainable(body: list, trainable: bool) -> None:
    """Freeze or unfreeze the reused layers; BatchNormalization stays frozen throughout.

    A frozen BatchNormalization layer runs in inference mode in Keras 3: it keeps the moving
    statistics it learnt on the source data, which a small new data set would otherwise
    overwrite in the first batches of fine-tuning (Keras's transfer learning guide).
    """
    import keras

    for layer in body:
        layer.trainable = trainable and not isinstance(layer, keras.layers.BatchNormalization)


def fit_probe(model, body: list, features, targets, task: str, target_mean: float = 0.0, target_std: float = 1.0,
              class_weight: str = "none", seed: int = 0) -> None:
    """Set the new head's weights to a linear model fitted on the frozen body's features."""
    import warnings

    import keras
    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression, Ridge

    if class_weight not in ("none", "balanced"):
        raise ValueError(f"class_weight must be 'none' or 'balanced', got {class_weight!r}")
    head = next(layer for layer in model.layers if isinstance(layer, keras.layers.Dense)
                and not any(layer is reused for reused in body))
    if len(features) > PROBE_MAX_ROWS:
        rows = np.random.default_rng(seed).choice(len(features), PROBE_MAX_ROWS, replace=False)
        features, targets = features[rows], targets[rows]
    # Inference mode: the probe sees the features as the frozen body gives them, without dropout.
    embedded = keras.Model(model.inputs, head.input).predict(features, verbose=0, batch_size=1024)
    embedded = embedded.reshape(len(embedded), -1).astype("float64")
    current = head.get_weights()
    kernel, bias = (np.zeros(w.shape, dtype="float64") for w in current)
    if task == "regression":
        # The head's Dense layer works in standardised units; a Rescaling layer after it restores the target's.
        ridge = Ridge(alpha=1.0).fit(embedded, (targets.reshape(-1) - target_mean) / target_std)
        kernel[:, 0], bias[0] = ridge.coef_, ridge.intercept_
    else:
        codes = targets.reshape(-1).astype(int) if targets.shape[-1] == 1 else targets.argmax(axis=1)
        weights = "balanced" if class_weight == "balanced" else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            probe = LogisticRegression(max_iter=1000, class_weight=weights).fit(embedded, codes)
        if kernel.shape[1] == 1:  # one sigmoid unit: the positive class's logit
            kernel[:, 0], bias[0] = probe.coef_[0], probe.intercept_[0]
        else:
            kernel[:, probe.classes_], bias[probe.classes_] = probe.coef_.T, probe.intercept_
    head.set_weights([kernel.astype(current[0].dtype), bias.astype(current[1].dtype)])
