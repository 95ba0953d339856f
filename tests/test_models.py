"""The network a TrainConfig builds (no fitting)."""

import pytest

from pipelines.errors import FittrackError
from pipelines.models import build_model
from pipelines.train import TrainConfig


def _cnn(**params):
    config = TrainConfig(model="cnn", **params)
    config.resolved_model = "cnn"
    return build_model(config, (8, 8), "classification", 10, image_scale=16.0)


def _batch_norms(model):
    return [layer for layer in model.layers if layer.__class__.__name__ == "BatchNormalization"]


def test_batch_norm_momentum_reaches_every_batch_norm_layer():
    assert [layer.momentum for layer in _batch_norms(_cnn(batch_norm_momentum=0.8))] == [0.8, 0.8]
    assert {layer.momentum for layer in _batch_norms(_cnn())} == {TrainConfig().batch_norm_momentum}


def test_batch_norm_off_builds_none():
    assert _batch_norms(_cnn(batch_norm=False)) == []


@pytest.mark.parametrize("momentum", [-0.1, 1.0])
def test_batch_norm_momentum_out_of_range_is_refused(momentum):
    with pytest.raises(FittrackError, match="batch_norm_momentum must be in"):
        TrainConfig(batch_norm_momentum=momentum)


def _mlp(task="classification", n_classes=3, **params):
    config = TrainConfig(model="mlp", **params)
    config.resolved_model = "mlp"
    return build_model(config, (5,), task, n_classes, target_mean=100.0, target_std=10.0)


def test_an_mlp_ensemble_averages_its_members_logits(tmp_path):
    import keras
    import numpy as np

    model = _mlp(ensemble_size=3, layers=2, units=4)
    # One kernel per member after the shared input: members do not see each other's units.
    assert model.get_layer("members_dense_0").kernel.shape == (5, 12)
    assert model.get_layer("members_dense_1").kernel.shape == (3, 4, 4)
    head = model.get_layer("members_logits")
    assert head.kernel.shape == (3, 4, 3)
    x = np.random.default_rng(0).normal(size=(6, 5)).astype("float32")
    # The output is the softmax of the members' mean logits, whatever each member says alone.
    logits = keras.Model(model.inputs, head.output).predict(x, verbose=0)
    assert logits.shape == (6, 3, 3)
    expected = keras.ops.convert_to_numpy(keras.ops.softmax(logits.mean(axis=1)))
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    # Keras's own layers only: the saved network loads with no fittrack class registered.
    model.save(tmp_path / "ensemble.keras")
    np.testing.assert_allclose(keras.models.load_model(tmp_path / "ensemble.keras").predict(x, verbose=0),
                               model.predict(x, verbose=0), rtol=1e-6)


def test_each_member_starts_as_its_own_glorot_initialised_mlp():
    import numpy as np

    model = _mlp(ensemble_size=16, layers=2, units=64)
    # Glorot uniform: variance 2 / (fan_in + fan_out) of each member's own layer, not of the batched kernel.
    first = np.asarray(model.get_layer("members_dense_0").kernel)
    hidden = np.asarray(model.get_layer("members_dense_1").kernel)
    assert abs(first.var() / (2 / (5 + 64)) - 1) < 0.1
    assert abs(hidden.var() / (2 / (64 + 64)) - 1) < 0.1
    assert abs(np.asarray(model.get_layer("members_logits").kernel).var() / (2 / (64 + 3)) - 1) < 0.1


def test_an_ensemble_of_one_is_the_plain_mlp_and_regression_keeps_target_units():
    single = _mlp(ensemble_size=1, layers=2)
    assert [layer.name for layer in single.layers if layer.name.startswith("dense_")] == ["dense_0", "dense_1"]
    assert not any(layer.name.startswith("members") for layer in single.layers)
    regression = _mlp("regression", 0, ensemble_size=2)
    assert regression.output_shape == (None, 1)
    assert regression.layers[-1].name == "target_units"


def test_ensemble_size_below_one_is_refused():
    with pytest.raises(FittrackError, match="ensemble_size must be >= 1, got 0"):
        TrainConfig(ensemble_size=0)
