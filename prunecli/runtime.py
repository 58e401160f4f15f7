"""TensorFlow start-up, kept out of import time: importing prunecli loads no TensorFlow.

``cli.py`` calls ``start`` only for commands that need a model, right before importing the
modules that use Keras, so ``--help`` and ``validate`` stay fast.
"""

from __future__ import annotations

import logging
import os
import platform
import warnings
from typing import Any


def start(seed: int | None = None) -> None:
    """Import TensorFlow quietly and seed every random generator Keras uses."""
    # TF reads its C++ log level once, at import: set it first (the user's own value wins).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

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
