"""Progress of a scan (points done of points in all): a rich bar on a terminal, a plain
line per layer otherwise, a JSON event per layer with ``--log-format json``, nothing when
quiet. The scan only calls ``progress(done, total, label)``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from prunecli import events
from prunecli.analysis.scan import Progress as Callback


@contextlib.contextmanager
def reporter(console: Console | None, name: str) -> Iterator[Callback]:
    """A ``(done, total, label)`` callback for the block's scan."""
    if console is None:
        yield lambda done, total, label: None
    elif console.is_terminal and not events.is_json(console):
        with Progress(
            TextColumn(f"{name} " + "{task.fields[label]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as bar:
            task = bar.add_task(name, total=None, label="")

            def advance(done: int, total: int, label: str) -> None:
                bar.update(task, completed=done, total=total, label=label)

            yield advance
    else:
        yield _lines(console, name)


def _lines(console: Console, name: str) -> Callback:
    """One line each time the scan moves on to another layer (and when it ends)."""
    last: list[str] = []

    def line(done: int, total: int, label: str) -> None:
        if label == (last[0] if last else None):
            return
        last[:] = [label]
        message = f"{name} {done}/{total} points" + (f": {label}" if label else ": done")
        if events.is_json(console):
            console.event(name, done=done, total=total, layer=label)  # type: ignore[attr-defined]
        else:
            console.print(message, highlight=False, soft_wrap=True)

    return line
