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
