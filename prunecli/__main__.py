"""``python -m prunecli`` is the ``prunecli`` command."""

from prunecli.cli.commands import entry

entry()
