"""What a finished trial leaves in memory, and letting it go (and the garbage collector's share).

Each traced Keras train step registers a graph-mode custom gradient (the optimizer's all-reduce
under tf.distribute's default strategy) in TensorFlow's process-wide gradient registry, and the
registered closure holds the step's whole FuncGraph: `keras.backend.clear_session` frees the model
but not that, so a long study grew by about 17 MB a trial (tensorflow/tensorflow#97697; the same
purge is proposed for tf-keras's clear_session in keras-team/tf-keras#898). A trial's graphs are
never traced again once it has ended, so the entries registered since the study started can go.
"""

from __future__ import annotations

import sys

_PREFIX = "CustomGradient-"


def _registry() -> dict | None:
    if "tensorflow" not in sys.modules:
        return None
    try:
        from tensorflow.python.framework import ops

        return ops._gradient_registry._registry
    except (ImportError, AttributeError):  # another TensorFlow layout: keep its (slower) behaviour
        return None


def custom_gradients() -> frozenset:
    """The custom gradients registered so far."""
    registry = _registry()
    return frozenset(k for k in registry if k.startswith(_PREFIX)) if registry is not None else frozenset()


def drop_custom_gradients(keep: frozenset) -> int:
    """Unregister the custom gradients not in `keep`; the next garbage collection frees their graphs."""
    registry = _registry()
    if registry is None:
        return 0
    gone = [k for k in registry if k.startswith(_PREFIX) and k not in keep]
    for key in gone:
        del registry[key]
    return len(gone)


def freeze_long_lived() -> None:
    """Leave what exists now (TensorFlow, MLflow, the split) out of every later garbage collection:
    clear_session collects at each trial, and a full collection walking those objects took about
    0.5 s of every trial on 2 cores. What the trials create is still collected."""
    import gc

    gc.collect()
    gc.freeze()
