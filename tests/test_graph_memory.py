"""A finished trial's graphs are freed between trials (pipelines.graph_memory)."""

import gc
import weakref

import numpy as np


def _fit_once():
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y = np.random.default_rng(0).random((32, 4), dtype="float32"), np.arange(32) % 3
    model.fit(x, y, epochs=1, verbose=0)
    return weakref.ref(model.train_function)


def _train_graphs_alive() -> int:
    from tensorflow.python.framework.func_graph import FuncGraph

    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, FuncGraph) and o.name == "one_step_on_data")


def test_a_trials_train_graph_outlives_clear_session_unless_its_custom_gradients_are_dropped():
    import keras

    from pipelines import graph_memory

    keras.backend.clear_session()
    before = graph_memory.custom_gradients()
    graphs_before = _train_graphs_alive()
    _fit_once()
    keras.backend.clear_session()
    # TensorFlow's registry pins the step's graph: this is what made a long study grow.
    assert graph_memory.custom_gradients() > before
    assert _train_graphs_alive() > graphs_before

    dropped = graph_memory.drop_custom_gradients(keep=before)
    keras.backend.clear_session()
    assert dropped >= 1
    assert graph_memory.custom_gradients() == before
    assert _train_graphs_alive() == graphs_before
