"""Where a fit runs: CPU or GPU, mixed precision, and the seeds that make it repeatable."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pipelines.errors import FittrackError

if TYPE_CHECKING:
    from pipelines.train import TrainConfig


def configure_device(config: TrainConfig) -> str:
    """Apply `device`, mixed precision and seeding; return a description of the device used."""
    if config.device == "cpu":
        # Only effective before TensorFlow starts; the CLI calls this before importing Keras.
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    import keras

    gpus = _gpus()
    if config.device == "gpu" and not gpus:
        raise FittrackError("device 'gpu' was asked for, but no GPU is visible; use device=auto or cpu")
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16" if gpus else "mixed_bfloat16")
    keras.utils.set_random_seed(config.seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        # Same parameters, same machine, same metrics: deterministic kernels cost little here.
        tf.config.experimental.enable_op_determinism()
    return f"GPU ({', '.join(gpus)})" if gpus and config.device != "cpu" else "CPU"


def _gpus() -> list[str]:
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_physical_devices("GPU")]
    if keras.backend.backend() == "jax":
        import jax

        return [str(d) for d in jax.devices() if d.platform == "gpu"]
    if keras.backend.backend() == "torch":
        import torch

        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return []
