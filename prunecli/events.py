"""Progress for machines: ``--log-format json`` writes one JSON object per line on stderr.

``progress.JsonReporter`` sends a run's progress here; the other ``--log-format`` modes are
``progress``'s plain and rich reporters. In ``json`` mode every line on stderr is an event
a log collector can parse::

    {"event": "loaded", "message": "loaded m.h5 (h5, 2,411 parameters); ...", "elapsed_s": 1.2}
    {"event": "epoch", "epoch": 1, "epochs": 3, "step": 2, "loss": 0.41, "metrics": {},
     "sparsity": 0.5, "elapsed_s": 2.0}
    {"event": "checkpoint", "epoch": 1, "step": 2, "path": "out/m.ckpt", "elapsed_s": 2.1}
    {"event": "error", "message": "...", "exit_code": 2}

TensorFlow's C++ code writes its own log lines to file descriptor 2, outside Python. While a
JSON run lasts (``json_stderr``), descriptor 2 is a pipe read by a thread that wraps each of
those lines as ``{"event": "log", "source": "native", "message": ...}``; Python's
``sys.stderr`` is pointed at the real stderr so the events themselves bypass the pipe.
Python warnings and ``logging`` records become ``warning`` and ``log`` events. No
TensorFlow here: ``cli`` sets all this up before TensorFlow is imported.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any, TextIO

from prunecli.names import LOG_FORMATS

FORMATS = LOG_FORMATS  # defined where --help reads it without importing this module
_lock = threading.Lock()
_STARTED = time.perf_counter()  # elapsed_s counts from here: when the CLI was imported


def emit(event: str, **fields: Any) -> None:
    """One JSON event line on ``sys.stderr``, written whole (the native-log thread writes too)."""
    record = {"event": event, **{key: _plain(value) for key, value in fields.items()}}
    record["elapsed_s"] = round(time.perf_counter() - _STARTED, 3)
    line = json.dumps(record, allow_nan=False) + "\n"
    with _lock:
        sys.stderr.write(line)
        sys.stderr.flush()


def _plain(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null (strict JSON has no NaN), paths strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    try:
        return _plain(float(value))  # numpy and TF scalars
    except (TypeError, ValueError):
        return str(value)


@contextlib.contextmanager
def json_stderr(active: bool, capture_native: bool = True) -> Iterator[None]:
    """For the block, keep everything on stderr JSON (see the module docstring).

    ``capture_native`` False (``--debug``) leaves descriptor 2 alone, so TensorFlow's own
    lines and tracebacks appear as they are.
    """
    if not active:
        yield
        return
    saved_showwarning = warnings.showwarning
    warnings.showwarning = _warning_event
    handler = _JsonLogHandler()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with _native_captured() if capture_native else contextlib.nullcontext():
            yield
    finally:
        root.removeHandler(handler)
        warnings.showwarning = saved_showwarning


@contextlib.contextmanager
def _native_captured() -> Iterator[None]:
    """Descriptor 2 -> a pipe whose lines become ``log`` events; ``sys.stderr`` -> the real one."""
    sys.stderr.flush()
    real = os.dup(2)
    read_end, write_end = os.pipe()
    stream: TextIO = open(real, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115
    previous = sys.stderr
    sys.stderr = stream
    os.dup2(write_end, 2)
    os.close(write_end)
    reader = threading.Thread(target=_wrap_native, args=(read_end,), daemon=True)
    reader.start()
    try:
        yield
    finally:
        os.dup2(real, 2)  # closes the pipe's last write end: the reader sees end of file
        reader.join(timeout=5)
        sys.stderr = previous
        stream.close()
        os.close(real)


def _wrap_native(read_end: int) -> None:
    with open(read_end, encoding="utf-8", errors="replace") as pipe:
        for line in pipe:
            if line.strip():
                emit("log", source="native", message=line.rstrip("\n"))


def _warning_event(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    emit("warning", category=category.__name__, message=str(message))


class _JsonLogHandler(logging.Handler):
    """Python ``logging`` records (absl, TensorFlow's Python side) as ``log`` events."""

    def emit(self, record: logging.LogRecord) -> None:
        emit("log", source=record.name, level=record.levelname, message=record.getMessage())
