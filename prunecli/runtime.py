"""TensorFlow start-up, kept out of import time: importing prunecli loads no TensorFlow.

``cli.py`` calls ``start`` only for commands that need a model, right before importing the
modules that use Keras, so ``--help`` and ``validate`` stay fast.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import sys
import warnings
from collections.abc import Iterator
from typing import Any


def start(seed: int | None = None, native_logs: bool = False, strategy: str = "none") -> None:
    """Import TensorFlow quietly and seed every random generator Keras uses.

    ``strategy`` (``finetune.strategy``) matters here only for ``multi_worker``, whose
    collective ops must be set up before TensorFlow initialises its devices.

    TF's C++ start-up lines (oneDNN notices, "could not find cuda drivers", cuInit errors
    on a machine without a GPU) are written to file descriptor 2 before any log level
    applies, so they are sent to /dev/null while TF imports and finds its devices, unless
    ``native_logs`` (``--debug``) asks to see them.
    """
    # TF reads its C++ log level once, at import: set it first (the user's own value wins).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with contextlib.nullcontext() if native_logs else native_stderr_muted():
        import keras
        import tensorflow as tf

        from prunecli.training import distribute

        distribute.prepare(strategy)  # before devices initialise: memory growth, collectives
        tf.config.list_logical_devices()  # device discovery prints its own lines: do it now

    logging.getLogger("absl").setLevel(logging.ERROR)
    tf.get_logger().setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="keras")
    if seed is not None:
        keras.utils.set_random_seed(seed)


def environment() -> dict[str, Any]:
    """Versions and devices, for the report."""
    import keras
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "devices": [device.name for device in tf.config.list_logical_devices()],
    }


def machine() -> dict[str, Any]:
    """``environment`` plus the hardware, for benchmark results anyone can compare."""
    return {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpus": os.cpu_count(),
        **environment(),
    }


@contextlib.contextmanager
def native_stderr_muted() -> Iterator[None]:
    """Point fd 2 at /dev/null for the block; Python's own sys.stderr is left alone."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as sink:
            os.dup2(sink.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
