"""Keras's BackupAndRestore, falling back to its previous backup for any unreadable weights file."""

from __future__ import annotations

import gc
import os

import keras


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore(double_checkpoint=True)` as a killed run needs it.

    A kill in the middle of a save leaves a truncated `latest.weights.h5`. Keras then restores the
    backup before it, but only when loading raises OSError, while h5py reports some truncated files
    as RuntimeError ("addr overflow"), and the restart failed (seen in tests/test_resume.py). Any
    error reading the backup is an OSError here, so Keras's own fallback takes over; the broken file
    is moved aside first, because HDF5 keeps a file it failed to read open, and would read the
    backup copied over it (the same inode) through the broken file's cached superblock.
    """

    def __init__(self, backup_dir: str, **kwargs):
        super().__init__(backup_dir, double_checkpoint=True, **kwargs)

    def _load_model(self):
        try:
            return super()._load_model()
        except (RuntimeError, ValueError, KeyError) as exc:
            gc.collect()  # closes what h5py left open
            if os.path.exists(self._weights_path):
                os.replace(self._weights_path, f"{self._weights_path}.broken")
            raise OSError(f"unreadable backup in {self.backup_dir}: {exc}") from exc
