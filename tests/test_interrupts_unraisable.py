"""A signal that lands inside a ``__del__`` (TensorFlow frees C++ handles in them all the
time) raised its KeyboardInterrupt where Python can only print it: a user pressing Ctrl-C
saw "Exception ignored in: <function UniquePtr.__del__ ...>" and a traceback before
prunecli's one line. The interrupt must still count, and print nothing."""

from __future__ import annotations

from helpers import DEFAULT_SIGNALS, run_python

CHILD = (
    DEFAULT_SIGNALS
    + """
from prunecli import interrupts

class Handle:
    def __del__(self):
        signal.raise_signal(signal.SIGTERM)  # the signal arrives while Python runs this

def other_unraisable():
    class Broken:
        def __del__(self):
            raise ValueError("a real problem in a __del__")
    Broken()

with interrupts.installed():
    Handle()
    try:
        interrupts.check()
        print("lost")
    except KeyboardInterrupt:
        print("raised")
    other_unraisable()  # anything else still reaches the normal hook
"""
)


def test_interrupt_inside_del_is_kept_and_silent():
    result = run_python(CHILD, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "raised"
    assert "KeyboardInterrupt" not in result.stderr
    assert "a real problem in a __del__" in result.stderr  # other hooks untouched
