"""What reaches the terminal: fittrack's own lines, warnings and errors; not the libraries' start-up
chatter, unless asked for (`--verbose`, `-P verbose=true`).

Quiet (the default) means, for this process and the processes it starts (nested steps, tune's
workers, which inherit the environment):
- TensorFlow: TF_CPP_MIN_LOG_LEVEL=3 (its C++ INFO, WARNING and ERROR lines; a failing operation
  still raises its Python exception with the message), and the lines its shared libraries write
  through absl while `import tensorflow` runs, before any log level applies ("All log messages
  before absl::InitializeLog() ...", "oneDNN custom operations are on ..."), which no level hides:
  those are dropped from what the import writes to stderr, everything else it writes is passed on;
- MLflow: its loggers at WARNING (MLFLOW_LOGGING_LEVEL), so `mlflow.projects.run`'s "=== Running
  command ..." and the like stay out of `main`'s output.

A variable the user set is left as it is. Importing this module stays light (no MLflow, no TensorFlow).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys
import tempfile

TF_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL"
MLFLOW_LOG_LEVEL = "MLFLOW_LOGGING_LEVEL"
#: What `import tensorflow` writes through absl before InitializeLog: no log level reaches it.
_IMPORT_NOISE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to "
                           r"STDERR|I\d{4} .*\] .*)$")

_set_here: set[str] = set()


def configure(verbose: bool) -> None:
    """Quiet or verbose, as the command was asked; call before TensorFlow is imported."""
    if verbose:
        # Only what an earlier configure() set: the user's own settings stay.
        for name in sorted(_set_here):
            os.environ.pop(name, None)
        _set_here.clear()
        _QuietTensorFlowImport.uninstall()
        if "mlflow" in sys.modules:
            logging.getLogger("mlflow").setLevel(logging.INFO)
        return
    for name, value in ((TF_LOG_LEVEL, "3"), (MLFLOW_LOG_LEVEL, "WARNING")):
        if name not in os.environ:
            os.environ[name] = value
            _set_here.add(name)
    if "mlflow" in sys.modules and MLFLOW_LOG_LEVEL in _set_here:
        # Already imported: its loggers took their level at import.
        logging.getLogger("mlflow").setLevel(logging.WARNING)
    # Whatever TF_CPP_MIN_LOG_LEVEL says: no level reaches these lines.
    _QuietTensorFlowImport.install()


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Runs the first `import tensorflow` with stderr (the file descriptor the C++ libraries write
    to) going to a file, then passes on every line of it but the absl start-up ones."""

    @classmethod
    def install(cls) -> None:
        if "tensorflow" not in sys.modules and not any(isinstance(f, cls) for f in sys.meta_path):
            sys.meta_path.insert(0, cls())

    @classmethod
    def uninstall(cls) -> None:
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, cls)]

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        self.uninstall()
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _FilteredLoader(spec.loader)
        return spec


class _FilteredLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):  # get_data, is_package, resources: the real loader's
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        # The module keeps the real loader (importlib.resources and the like ask it).
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        with _stderr_filtered():
            self.loader.exec_module(module)


class _stderr_filtered:
    def __enter__(self):
        try:
            self.fd = sys.stderr.fileno()
        except (AttributeError, OSError, ValueError):  # a captured stderr (pytest, IDEs): nothing to filter
            self.fd = None
            return self
        sys.stderr.flush()
        self.saved = os.dup(self.fd)
        self.capture = tempfile.TemporaryFile()
        os.dup2(self.capture.fileno(), self.fd)
        return self

    def __exit__(self, *exc):
        if self.fd is None:
            return False
        try:
            sys.stderr.flush()
        finally:
            os.dup2(self.saved, self.fd)
            os.close(self.saved)
        self.capture.seek(0)
        text = self.capture.read().decode(errors="replace")
        self.capture.close()
        kept = [line for line in text.splitlines(keepends=True) if not _IMPORT_NOISE.match(line.rstrip("\n"))]
        if kept:
            sys.stderr.write("".join(kept))
            sys.stderr.flush()
        return False
