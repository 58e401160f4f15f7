"""Progress of a run, through one interface: the library reports, the CLI picks how.

Library code (pipeline, fine-tuning, checkpoints) holds a ``Reporter`` and calls its
methods; it never asks which kind it holds. The CLI makes one for ``--log-format`` and
``--quiet`` (``make``):

- ``Reporter``: quiet, says nothing (``--quiet``).
- ``PlainReporter``: one line per message and per epoch, for CI logs.
- ``RichReporter``: messages, and a progress bar over the fine-tuning steps (a terminal).
- ``JsonReporter``: one JSON event per line for log collectors (see ``events``).
"""

from __future__ import annotations

from typing import Any

from rich.console import Console

from prunecli import events


class Reporter:
    """Says nothing; the base of the others. ``per_step``: whether ``step`` is wanted after
    every training step (a callback per step costs a host sync, so only a bar asks)."""

    per_step = False

    def say(self, event: str, message: str, **fields: Any) -> None:
        """A progress line for people; ``event`` names it for machines (``loaded``,
        ``wrote``, ``resumed``, ``warning``, ``message``), ``fields`` add to the event."""

    def note(self, event: str, **fields: Any) -> None:
        """A fact only machines want (``checkpoint``): no line for people."""

    def epoch(self, epoch: int, epochs: int, step: int, loss: float, **fields: Any) -> None:
        """The end of fine-tuning epoch ``epoch`` (1-based) of ``epochs``."""

    def start_steps(self, total: int, sparsity: float) -> None:
        """Fine-tuning begins: ``total`` optimizer steps."""

    def step(self, epoch: str, loss: float, sparsity: float) -> None:
        """One optimizer step done (only called when ``per_step``)."""

    def end_steps(self) -> None:
        """Fine-tuning ended (or was interrupted)."""


class PlainReporter(Reporter):
    """Lines on stderr: each message, and ``epoch 1/3  loss 0.4123  sparsity 0.500``."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def say(self, event: str, message: str, **fields: Any) -> None:
        self.console.print(message, highlight=False, soft_wrap=True)

    def epoch(self, epoch: int, epochs: int, step: int, loss: float, **fields: Any) -> None:
        self.console.print(
            f"epoch {epoch}/{epochs}  loss {loss:.4f}  sparsity {fields['sparsity']:.3f}",
            highlight=False,
        )


class RichReporter(PlainReporter):
    """Messages as lines, fine-tuning as one bar (epoch, steps, loss, sparsity, time)."""

    per_step = True

    def __init__(self, console: Console) -> None:
        super().__init__(console)
        self.bar: Any = None

    def epoch(self, epoch: int, epochs: int, step: int, loss: float, **fields: Any) -> None:
        """The bar shows epochs as they come; no extra line."""

    def start_steps(self, total: int, sparsity: float) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.bar = Progress(
            TextColumn("fine-tune epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  sparsity {task.fields[sparsity]:.3f}"),
            TimeElapsedColumn(),
            console=self.console,
        )
        self.task = self.bar.add_task(
            "fine-tune", total=total, epoch="1", loss=float("nan"), sparsity=sparsity
        )
        self.bar.start()

    def step(self, epoch: str, loss: float, sparsity: float) -> None:
        self.bar.update(self.task, advance=1, epoch=epoch, loss=loss, sparsity=sparsity)

    def end_steps(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


class JsonReporter(Reporter):
    """Every report is one JSON event on stderr (``events.emit``)."""

    def say(self, event: str, message: str, **fields: Any) -> None:
        events.emit(event, message=message, **fields)

    def note(self, event: str, **fields: Any) -> None:
        events.emit(event, **fields)

    def epoch(self, epoch: int, epochs: int, step: int, loss: float, **fields: Any) -> None:
        events.emit("epoch", epoch=epoch, epochs=epochs, step=step, loss=loss, **fields)


def make(log_format: str, quiet: bool) -> Reporter:
    """The reporter for ``--log-format`` (auto: a bar on a terminal, lines otherwise)."""
    if quiet:
        return Reporter()
    if log_format == "json":
        return JsonReporter()
    console = Console(stderr=True, force_terminal=True if log_format == "rich" else None)
    if log_format == "plain" or (log_format == "auto" and not console.is_terminal):
        return PlainReporter(console)
    return RichReporter(console)
