"""Faults from the environment, not bugs: a full disk, an input deleted mid-run.

They surface deep inside Keras, h5py or TensorFlow as ``OSError``s or TensorFlow errors
with pages of text; ``classify`` turns them into one-line ``PruneError``s (exit 2)::

    OSError(28, "No space left on device")   -> OutputError("no space left on device: ...")
    tf.errors.NotFoundError("x.png; No such file or directory") -> DataError("x.png; ...")

``private_tempdir`` gives a run its own temporary folder, removed at the end whatever
happens: what Keras and TensorFlow leave in temp folders when a write fails
(``tmp*/assets``) goes with it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator

from prunecli.errors import DataError, OutputError, PruneError, first_line

_FULL = (errno.ENOSPC, errno.EDQUOT)
_FULL_TEXT = ("no space left on device", "disk quota exceeded", "errno = 28")
_GONE = ("NotFoundError", "DataLossError")
# TensorFlow ops whose InvalidArgumentError during a run means a sample could not be read
# (a file that passed the up-front checks but is damaged inside, e.g. a truncated BMP).
_DECODERS = ("Decode", "ParseExample", "ParseSingleExample")


def classify(exc: BaseException) -> PruneError | None:
    """The user-facing error an environment fault means, or None (a bug)."""
    chain = list(_chain(exc))
    for link in chain:
        text = str(link).lower()
        if (isinstance(link, OSError) and link.errno in _FULL) or any(
            marker in text for marker in _FULL_TEXT
        ):
            where = next((str(x.filename) for x in chain if getattr(x, "filename", None)), None)
            detail = f"{where}" if where else first_line(exc)
            return OutputError(f"no space left on device: {detail}; nothing was written")
    for link in chain:
        names = {cls.__name__ for cls in type(link).__mro__}
        if isinstance(link, FileNotFoundError) or (
            names & set(_GONE) and type(link).__module__.startswith("tensorflow")
        ):
            return DataError(f"an input disappeared or changed during the run: {_reason(link)}")
        node = _failed_node(link)
        if "InvalidArgumentError" in names and node and node.startswith(_DECODERS):
            return DataError(f"a data sample could not be decoded ({node}): {_reason(link)}")
    return None


def _failed_node(exc: BaseException) -> str | None:
    """The op named in TensorFlow's "Detected at node X" line, if any (its last part:
    ``cond/decode_image/DecodeImage`` -> ``DecodeImage``)."""
    for line in str(exc).splitlines():
        if line.startswith("Detected at node "):
            return line.removeprefix("Detected at node ").split()[0].rsplit("/", 1)[-1]
    return None


def _reason(exc: BaseException) -> str:
    """The line of TensorFlow's message that says what happened: its first line is often
    just "Graph execution error:", the path comes lines later."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if any(word in line.lower() for word in ("no such file", "not found", "data loss")):
            return line[:300]
    for line in lines:  # "Error in user-defined function passed to X: Iterator::...: reason"
        if line.startswith("Error in user-defined function") and line.count(": ") >= 2:
            return line.split(": ", 2)[2][:300]
    return first_line(exc)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


@contextlib.contextmanager
def private_tempdir() -> Iterator[None]:
    """Point ``tempfile`` (and ``TMPDIR``, for TensorFlow's C++) at a fresh folder for the
    duration, then remove it."""
    try:
        folder = tempfile.mkdtemp(prefix="prunecli-run-")
    except OSError:  # an unwritable temp folder: let the run fail where it needs one
        yield
        return
    saved_tempdir, saved_env = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir, os.environ["TMPDIR"] = folder, folder
    try:
        yield
    finally:
        tempfile.tempdir = saved_tempdir
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env
        shutil.rmtree(folder, ignore_errors=True)
