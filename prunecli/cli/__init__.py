"""The command line: parses arguments, runs a command, maps errors to exit codes."""

from prunecli.cli.commands import entry, main

__all__ = ["entry", "main"]
