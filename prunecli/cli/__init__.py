"""The command line: parses arguments, runs a command, maps errors to exit codes."""

from prunecli.cli.commands import main

__all__ = ["main"]
