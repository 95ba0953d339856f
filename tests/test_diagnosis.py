import pytest

from tracking.diagnosis import diagnose


def test_rising_validation_loss_is_overfitting():
    loss = [1.0, 0.6, 0.4, 0.3, 0.2, 0.1]
    val = [1.0, 0.7, 0.5, 0.6, 0.7, 0.8]
    d = diagnose(loss, val, dummy_loss=2.3)
    assert d.label == "overfitting" and d.best_epoch == 2
    assert "rose from 0.5 at epoch 2 to 0.8" in d.reason


def test_large_gap_is_overfitting():
    d = diagnose([0.5, 0.1, 0.05], [0.9, 0.8, 0.8], dummy_loss=1.0)
    assert d.label == "overfitting"


def test_both_losses_high_is_underfitting():
    d = diagnose([2.2, 2.1, 2.05], [2.2, 2.15, 2.1], dummy_loss=2.3)
    assert d.label == "underfitting"


def test_close_curves_are_a_good_fit():
    d = diagnose([1.0, 0.5, 0.3, 0.25], [1.0, 0.55, 0.35, 0.31], dummy_loss=2.3)
    assert d.label == "good_fit" and d.best_epoch == 3


def test_noise_level_rise_is_not_overfitting():
    d = diagnose([0.5, 0.1, 0.05, 0.04], [0.5, 0.021, 0.025, 0.03], dummy_loss=2.3)
    assert d.label == "good_fit"


def test_curves_must_match():
    with pytest.raises(ValueError, match="need equal, non-empty loss curves, got 2 and 1"):
        diagnose([1.0, 0.5], [1.0])
