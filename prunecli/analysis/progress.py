"""Progress of a scan (points done of points in all), through the run's ``Reporter``: a
rich bar when the reporter draws one (``per_step``: a terminal), otherwise one ``scan``
report per layer (a plain line, or a JSON event with ``done``, ``total`` and ``layer``);
nothing when quiet. The scan itself only calls ``progress(done, total, label)``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prunecli.analysis.scan import Progress as Callback
from prunecli.progress import Reporter


@contextlib.contextmanager
def scan_progress(reporter: Reporter, name: str) -> Iterator[Callback]:
    """A ``(done, total, label)`` callback for the block's scan."""
    console = getattr(reporter, "console", None)
    if not (reporter.per_step and console is not None):
        yield _lines(reporter, name)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

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


def _lines(reporter: Reporter, name: str) -> Callback:
    """One report each time the scan moves on to another layer (and when it ends)."""
    last: list[str] = []

    def line(done: int, total: int, label: str) -> None:
        if last and label == last[0]:
            return
        last[:] = [label]
        message = f"{name} {done}/{total} points" + (f": {label}" if label else ": done")
        reporter.say(name, message, done=done, total=total, layer=label)

    return line
