"""progress.py: one reporter interface; what each kind writes (plain lines, JSON events on
stderr, nothing when quiet) and which kind ``make`` picks for ``--log-format``."""

from __future__ import annotations

import io
import json
import math

import pytest
from rich.console import Console

from prunecli import progress


def plain_console() -> tuple[Console, io.StringIO]:
    stream = io.StringIO()
    return Console(file=stream, width=200, color_system=None), stream


def drive(reporter: progress.Reporter) -> None:
    """One short run as the pipeline reports it: load, two epochs, a checkpoint, write."""
    reporter.say("loaded", "loaded m.h5 (h5, 2,411 parameters)", path="m.h5")
    reporter.start_steps(total=4, sparsity=0.0)
    for epoch, loss in ((1, 0.91234), (2, 0.5)):
        if reporter.per_step:
            for _ in range(2):
                reporter.step(str(epoch), loss, 0.5)
        reporter.epoch(epoch, 2, 2 * epoch, loss, sparsity=0.5, metrics={"accuracy": 0.75})
    reporter.note("checkpoint", epoch=2, step=4, path="out/m.ckpt")
    reporter.end_steps()
    reporter.say("wrote", "wrote p.keras")


def test_plain_reporter_writes_one_line_per_message_and_epoch():
    console, stream = plain_console()
    reporter = progress.PlainReporter(console)
    assert reporter.per_step is False  # no callback per step for a log
    drive(reporter)
    assert stream.getvalue().splitlines() == [
        "loaded m.h5 (h5, 2,411 parameters)",
        "epoch 1/2  loss 0.9123  sparsity 0.500",
        "epoch 2/2  loss 0.5000  sparsity 0.500",
        "wrote p.keras",
    ]  # the checkpoint note is for machines only


def test_json_reporter_writes_events_on_stderr_only(capsys):
    drive(progress.JsonReporter())
    captured = capsys.readouterr()
    assert captured.out == ""
    records = [json.loads(line) for line in captured.err.splitlines()]
    assert all(record.pop("elapsed_s") >= 0 for record in records)
    assert records == [
        {"event": "loaded", "message": "loaded m.h5 (h5, 2,411 parameters)", "path": "m.h5"},
        {"event": "epoch", "epoch": 1, "epochs": 2, "step": 2, "loss": 0.91234,
         "sparsity": 0.5, "metrics": {"accuracy": 0.75}},
        {"event": "epoch", "epoch": 2, "epochs": 2, "step": 4, "loss": 0.5,
         "sparsity": 0.5, "metrics": {"accuracy": 0.75}},
        {"event": "checkpoint", "epoch": 2, "step": 4, "path": "out/m.ckpt"},
        {"event": "wrote", "message": "wrote p.keras"},
    ]  # fmt: skip


def test_json_reporter_writes_a_nan_loss_as_null(capsys):
    progress.JsonReporter().epoch(1, 1, 1, math.nan, sparsity=0.5)
    (line,) = capsys.readouterr().err.splitlines()
    assert json.loads(line)["loss"] is None  # strict JSON: no NaN


def test_quiet_reporter_says_nothing(capsys):
    drive(progress.make("plain", quiet=True))
    assert capsys.readouterr() == ("", "")


def test_rich_reporter_shows_a_bar_and_no_epoch_lines():
    stream = io.StringIO()
    console = Console(file=stream, width=120, force_terminal=True, color_system=None)
    reporter = progress.RichReporter(console)
    assert reporter.per_step is True
    drive(reporter)
    text = stream.getvalue()
    assert "loaded m.h5" in text and "wrote p.keras" in text
    assert "fine-tune epoch 2" in text and "4/4" in text  # the bar reached its end
    assert "epoch 1/2  loss" not in text
    assert reporter.bar is None  # stopped


@pytest.mark.parametrize(
    ("log_format", "quiet", "kind"),
    [
        ("json", False, progress.JsonReporter),
        ("plain", False, progress.PlainReporter),
        ("rich", False, progress.RichReporter),
        ("auto", False, progress.PlainReporter),  # capsys: stderr is not a terminal
        ("json", True, progress.Reporter),
    ],
)
def test_make_picks_the_reporter_for_the_log_format(capsys, log_format, quiet, kind):
    assert type(progress.make(log_format, quiet)) is kind
