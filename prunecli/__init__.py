"""prunecli: prune trained Keras 3 models from the command line, and prove what it cost.

Importing this package loads no TensorFlow; see ``prunecli.runtime``.
"""

__version__ = "0.1.0"
