"""The one exception hierarchy of prunecli.

Library code raises these; only ``cli.py`` turns them into exit codes and a one-line
message on stderr (see ``EXIT_CODES`` there). Every message is meant to be read by a
person: it names the file, key or value, says what was expected and, where there is
one, suggests a way out.
"""

from __future__ import annotations


class PruneError(Exception):
    """Base class: an expected failure caused by the user's input, not a bug."""


class ConfigError(PruneError):
    """The YAML config or a command-line override is invalid."""


class ModelLoadError(PruneError):
    """The model file is missing, is not a model, or cannot be loaded safely."""


class DataError(PruneError):
    """The dataset is missing, malformed, or does not fit the model."""


class OutputError(PruneError):
    """An output path is unusable: missing folder, not writable, exists, or is the input."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type when empty): TensorFlow's and
    Keras's messages run to pages, and prunecli's errors are one line."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def os_message(exc: OSError, path: object) -> str:
    """``<path>: <reason>`` for an OSError, e.g. ``out/m.keras: no space left on device``:
    the library wraps every OSError where it happens into the error type of that stage,
    so the CLI never reports a full disk or a vanished file as a bug."""
    reason = (exc.strerror or first_line(exc)).lower()
    if exc.errno == 28 or "errno = 28" in str(exc):  # h5py buries ENOSPC in its own text
        reason = "no space left on device"
    return f"{path}: {reason}"
