"""``prunecli.interrupts``: a signal becomes a KeyboardInterrupt that a swallowing caller
cannot lose. Real signals, raised in this process's main thread."""

from __future__ import annotations

import signal

import pytest

from prunecli import interrupts


def swallowed(signum: signal.Signals) -> bool:
    """Deliver ``signum`` here and swallow what it raises, as TF's C++ may; True if raised."""
    try:
        signal.raise_signal(signum)
    except KeyboardInterrupt:
        return True
    return False


@pytest.fixture
def default_handlers():
    """A suite started in the background (``make test &``) inherits SIGINT ignored, which
    ``installed`` rightly keeps; these tests start from the default handlers instead."""
    previous = {signum: signal.getsignal(signum) for signum in interrupts.SIGNALS}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    for signum, handler in previous.items():
        signal.signal(signum, handler)


@pytest.mark.usefixtures("default_handlers")
@pytest.mark.parametrize("signum", interrupts.SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_a_lost_interrupt_is_raised_again_by_check(signum):
    with interrupts.installed():
        interrupts.check()  # nothing yet
        assert swallowed(signum) is True
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()  # and stays requested


def test_deferred_records_and_raises_on_check_or_exit():
    def train_a_step() -> None:
        with interrupts.deferred():
            assert swallowed(signal.SIGTERM) is False  # the handler did not raise
            with pytest.raises(KeyboardInterrupt):
                interrupts.check()  # the batch-end check does

    with interrupts.installed():
        with pytest.raises(KeyboardInterrupt):
            train_a_step()  # and leaving the block raises it again
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()


def test_handlers_restored_and_state_reset():
    before = {signum: signal.getsignal(signum) for signum in interrupts.SIGNALS}
    with interrupts.installed():
        swallowed(signal.SIGTERM)
        assert signal.getsignal(signal.SIGTERM) is not before[signal.SIGTERM]
    assert {signum: signal.getsignal(signum) for signum in interrupts.SIGNALS} == before
    with interrupts.installed():
        interrupts.check()  # a new command starts clean


def test_ignored_signal_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupts.installed():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert swallowed(signal.SIGINT) is False
            interrupts.check()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
