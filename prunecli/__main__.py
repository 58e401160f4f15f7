"""``python -m prunecli`` is the ``prunecli`` command."""

from prunecli.cli import main

main()
