"""SIGINT and SIGTERM as a ``KeyboardInterrupt`` that cannot get lost.

Python runs a signal handler between two bytecodes of the main thread, wherever they are:
also inside a ``__len__`` that TensorFlow's C++ calls during a train step and whose
exception it discards. A ``KeyboardInterrupt`` raised there vanishes, and the run went on
to write its outputs (about 1 SIGTERM in 20 during fine-tuning). So the handler records
the request as well, and ``check`` raises it again at the points that matter: before every
training step and right before outputs are renamed into place. While ``deferred``
(fine-tuning), the handler only records it, and the check before the next step raises it,
outside TensorFlow's C++.

No TensorFlow here: ``cli`` installs the handlers before TensorFlow is imported.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _State:
    requested = False  # a signal arrived during this command
    deferring = False  # record only; a check() raises it


_state = _State()


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """Route SIGINT and SIGTERM to ``_handle`` for the block; restore the old handlers after.

    A signal the parent process ignores (SIGINT for a background job) stays ignored. The
    block's record of a signal ends with it: a later ``check`` outside any command (a
    library caller in the same process, the next test) must not raise a signal that was
    meant for this one.
    """
    _state.requested = _state.deferring = False
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    for signum, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(signum, _handle)
    hook = sys.unraisablehook
    sys.unraisablehook = functools.partial(_unraisable, hook)
    try:
        yield
    finally:
        sys.unraisablehook = hook
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        _state.requested = _state.deferring = False


def _unraisable(hook: Callable[[Any], Any], unraisable: Any) -> None:
    """A signal that lands in a ``__del__`` (TensorFlow frees C++ handles in them) raises
    where Python can only print "Exception ignored in ..." and a traceback. That
    interrupt is already recorded (``check`` raises it again): drop the print. Anything
    else goes to the hook that was there before."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and _state.requested:
        return
    hook(unraisable)


def check() -> None:
    """Raise ``KeyboardInterrupt`` if a signal arrived, even if its first raise was lost."""
    if _state.requested:
        raise KeyboardInterrupt


def requested() -> bool:
    """Whether a signal arrived during this command (for a last checkpoint before stopping)."""
    return _state.requested


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Only record signals in the block; ``check`` raises them (and once more on leaving)."""
    outer, _state.deferring = _state.deferring, True
    try:
        yield
    finally:
        _state.deferring = outer
    check()


def complete() -> None:
    """The run's outputs are in place: from now on a signal is recorded, never raised, and
    the command exits 0 (its work is done; stopping now would only hide that)."""
    _state.deferring = True


def _handle(signum: int, frame: FrameType | None) -> None:
    _state.requested = True
    if not _state.deferring:
        raise KeyboardInterrupt
