"""Keras's TensorBoard callback with each epoch at its number, as the console and MLflow have it."""

from __future__ import annotations

import keras

from tracking.epochs import epoch_number


class TensorBoard(keras.callbacks.TensorBoard):
    """Writes epoch `n` of Keras's progress bar at TensorBoard step n (Keras's own writes it at n - 1),
    so TensorBoard's charts, the MLflow UI's and the console name the same epoch alike."""

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch_number(epoch), logs)
