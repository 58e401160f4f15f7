"""The ``prunecli`` command: parse, dispatch, and map errors to exit codes (one table).

Only this module talks to the terminal's exit status. TensorFlow is imported inside the
commands that load a model, after ``runtime.start``: ``--help`` and ``validate`` never pay
for it. Nothing beyond click is imported at module level: ``prunecli --help`` and
``prunecli prune --help`` build every option and stop, so the config models (pydantic),
``rich`` and the event machinery are imported by the command that runs, when it runs.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from prunecli import __version__
from prunecli.errors import (
    ConfigError,
    DataError,
    ModelLoadError,
    OutputError,
    PruneError,
    first_line,
)
from prunecli.names import LOG_FORMATS

if TYPE_CHECKING:
    from prunecli import config

EXIT_OK = 0
EXIT_BUG = 1
EXIT_USAGE = 2  # bad usage, config, model, data or output path
EXIT_GATE = 3  # a quality gate failed; outputs are still written
EXIT_INTERRUPTED = 130  # SIGINT or SIGTERM

EXIT_CODES: dict[type[PruneError], int] = {
    ConfigError: EXIT_USAGE,
    ModelLoadError: EXIT_USAGE,
    DataError: EXIT_USAGE,
    OutputError: EXIT_USAGE,
}


def _fail(message: str, code: int, as_event: bool = False) -> None:
    if as_event:  # --log-format json: the error is one more event
        from prunecli import events

        events.emit("error", message=message, exit_code=code)
    else:
        click.echo(f"prunecli: error: {message}", err=True)
    sys.exit(code)


def _guarded(command: Callable[..., Any], *, runs: bool = True) -> Callable[..., Any]:
    """Turn prunecli's exceptions into one stderr line and an exit code (traceback: --debug).

    ``runs``: the command does real work (loads models, writes files), so it also gets the
    signal handlers, JSON stderr and a private temp folder; ``validate`` (False) only reads
    a YAML file and starts without importing them.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
        as_json = kwargs.get("log_format") == "json"
        try:
            with _run_guards(as_json, debug) if runs else contextlib.nullcontext():
                return command(*args, debug=debug, **kwargs)
        except PruneError as exc:
            if debug:
                traceback.print_exc()
            _fail(first_line(exc), EXIT_CODES.get(type(exc), EXIT_USAGE), as_json)
        except KeyboardInterrupt as exc:
            _fail(str(exc) or "interrupted; no output was written", EXIT_INTERRUPTED, as_json)
        except Exception as exc:
            if debug:
                traceback.print_exc()
            from prunecli import faults

            known = faults.classify(exc)  # a full disk, an input gone: not a bug
            if known is not None:
                _fail(first_line(known), EXIT_CODES[type(known)], as_json)
            _fail(
                f"unexpected {type(exc).__name__}: {first_line(exc)} "
                "(a bug: rerun with --debug and report it)",
                EXIT_BUG,
                as_json,
            )

    return click.option("--debug", is_flag=True, help="Show tracebacks.")(wrapper)


@contextlib.contextmanager
def _run_guards(as_json: bool, debug: bool) -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, and is never lost; with --log-format json every stderr
    line is an event, TensorFlow's native lines included; temp files go to a folder of
    the run's own, removed at the end."""
    from prunecli import events, faults, interrupts  # here, not at import: --help is fast

    with (
        interrupts.installed(),
        events.json_stderr(as_json, capture_native=not debug),
        faults.private_tempdir(),
    ):
        yield


# Options several commands share (one definition each).
_IMPORT = click.option(
    "--import",
    "imports",
    multiple=True,
    metavar="MODULE",
    help="Import this Python module first (repeatable): user code registering custom layers.",
)
_MODEL = click.argument("model", type=click.Path(path_type=Path))
_CONFIG = click.option(
    "-c", "--config", "config_path", type=click.Path(path_type=Path), help="YAML config."
)
_DATA = click.option(
    "--data",
    type=click.Path(path_type=Path),
    help="Dataset folder (train/ and val/ inside, or the training set itself), or one "
    ".npz / .csv / TFRecord file (the training set).",
)
_SET = click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override any dotted config key (repeatable).",
)
_FORCE = click.option(
    "--force", is_flag=True, help="Replace earlier prunecli outputs (never other files)."
)
_NO_SAFE_MODE = click.option(
    "--no-safe-mode", is_flag=True, help="Allow Lambda layers (runs code stored in the model)."
)
_LOG_FORMAT = click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="auto",
    show_default=True,
    help="Progress on stderr: rich bar, plain lines, or one JSON event per line.",
)
_QUIET = click.option("-q", "--quiet", is_flag=True, help="No progress bar or logs.")


def _MODEL_CONFIG_DATA(command: Callable[..., Any]) -> Callable[..., Any]:
    """MODEL, --config and --data: what every command that runs a model on data takes."""
    return _MODEL(_CONFIG(_DATA(command)))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="prunecli")
def main() -> None:
    """Prune trained Keras models, fine-tune them with the masks held, and report the cost.

    \b
      prunecli prune model.h5 --config cfg.yaml
      prunecli inspect model.keras
      prunecli analyze model.h5 --config cfg.yaml -o scan/
      prunecli validate cfg.yaml --print
    """


@main.command()
@_MODEL_CONFIG_DATA
@click.option(
    "-o",
    "--output",
    type=click.Path(),  # a str: Path would drop the trailing "/" that means a SavedModel folder
    help="Output model: .keras, .h5, .tflite, or a SavedModel folder (no suffix or ending in /).",
)
@click.option(
    "--report", type=click.Path(path_type=Path), help="Report JSON path (Markdown beside it)."
)
@click.option(
    "--sparsity",
    help="Target sparsity (prune.sparsity): a number in [0, 1), or auto (--max-accuracy-drop).",
)
@click.option(
    "--sweep",
    metavar="S1,S2,...",
    help="One prune + fine-tune per target, e.g. 0.5,0.7,0.9 (prune.sweep), one combined report.",
)
@click.option("--epochs", type=int, help="Fine-tuning epochs (finetune.epochs); 0 prunes only.")
@click.option("--seed", type=int, help="Random seed.")
@_SET
@click.option(
    "--json", "as_json", is_flag=True, help="Print the report as JSON on stdout, nothing else."
)
@click.option(
    "--max-accuracy-drop",
    type=float,
    help="Exit 3 if accuracy falls by more than this (e.g. 0.01).",
)
@_FORCE
@_NO_SAFE_MODE
@click.option(
    "--resume",
    is_flag=True,
    help="Continue an interrupted run from its checkpoint (finetune.checkpoint_dir).",
)
@_LOG_FORMAT
@_IMPORT
@_QUIET
@_guarded
def prune(
    model: Path,
    config_path: Path | None,
    data: Path | None,
    output: str | None,
    report: Path | None,
    sparsity: str | None,
    sweep: str | None,
    epochs: int | None,
    seed: int | None,
    assignments: tuple[str, ...],
    as_json: bool,
    max_accuracy_drop: float | None,
    force: bool,
    no_safe_mode: bool,
    resume: bool,
    log_format: str,
    imports: tuple[str, ...],
    quiet: bool,
    debug: bool,
) -> None:
    """Prune MODEL (.keras, .h5 or a SavedModel folder), fine-tune it, write it and a report.

    \b
      prunecli prune model.h5 --config cfg.yaml
      prunecli prune model.keras --data data/ -o pruned.keras --json > report.json
      prunecli prune model.h5 --sparsity 0.9 --set prune.scope=global --max-accuracy-drop 0.01
      prunecli prune model.h5 -c cfg.yaml --log-format json --resume   # batch job, preemptible

    Exit codes: 0 ok, 1 bug, 2 bad input, 3 gate failed, 130 interrupted.
    """
    if max_accuracy_drop is not None and not 0 <= max_accuracy_drop <= 1:
        raise ConfigError(f"--max-accuracy-drop: must be between 0 and 1, got {max_accuracy_drop}")
    flags = {
        "prune.sparsity": _number_or_auto(sparsity),
        "prune.sweep": _targets(sweep),
        "prune.max_accuracy_drop": max_accuracy_drop,
        "finetune.epochs": epochs,
        "seed": seed,
        "output.path": output,
        "output.report": report,
    }
    settings = _settings(config_path, data, assignments, flags, imports)
    from prunecli import runtime

    runtime.start(settings.seed, native_logs=debug, strategy=settings.finetune.strategy)
    from prunecli import pipeline, progress

    request = pipeline.Request(
        model,
        settings,
        force=force,
        safe_mode=not no_safe_mode,
        max_accuracy_drop=settings.prune.max_accuracy_drop,  # the flag, or the config's
        resume=resume,
        config_file=config_path,
    )
    _run(request, progress.make(log_format, quiet), as_json)


def _run(request: Any, reporter: Any, as_json: bool) -> None:
    """One prune (or a sweep of them); the report on stdout."""
    from prunecli import pipeline
    from prunecli.training import checkpoints

    if request.config.prune.sweep:
        _sweep(request, reporter, as_json)
        return
    try:
        result = pipeline.run(request, reporter)
    except KeyboardInterrupt as exc:  # say so when a checkpoint is left to resume from
        raise checkpoints.interrupted(pipeline.checkpoint_folder(request), exc) from None
    _print_result(result, as_json)


def _sweep(request: Any, reporter: Any, as_json: bool) -> None:
    """``--sweep``: one prune per target, one combined report; exit 3 if any gate failed."""
    from prunecli.analysis import sweep as sweeping

    combined = sweeping.run(request, reporter)
    click.echo(json.dumps(combined, indent=2) if as_json else sweeping.summary(combined))
    failed = [run for run in combined["runs"] if run["gate"] and not run["gate"]["passed"]]
    if failed:
        _fail(f"{len(failed)} sweep targets failed the accuracy gate", EXIT_GATE)


def _number_or_auto(text: str | None) -> float | str | None:
    """``--sparsity``: ``auto`` or a number (range checked with the config)."""
    if text is None or text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise ConfigError(
            f"--sparsity: expected a number in [0, 1) or auto, got {text!r}"
        ) from None


def _targets(text: str | None) -> list[float] | None:
    """``--sweep 0.5,0.7,0.9`` -> [0.5, 0.7, 0.9] (ranges checked with the config)."""
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--sweep: expected comma-separated sparsities, got {text!r}") from None


def _settings(
    config_path: Path | None,
    data: Path | None,
    assignments: tuple[str, ...],
    flags: dict[str, Any],
    imports: tuple[str, ...] = (),
) -> config.Config:
    """The config file, then ``--set`` and the dedicated flags, then ``--data``;
    ``--import`` modules add to the config's ``input.imports``."""
    from prunecli import config

    if imports:
        found = config.load(config_path, _overrides(assignments, flags)).input.imports
        flags = flags | {"input.imports": [*found, *imports]}
    overrides = _overrides(assignments, flags)
    if data is not None:
        from prunecli.data import split_dir

        train, validation = split_dir(data)
        overrides |= {"data.train": str(train)}
        if validation is not None:  # else the config's or --set's data.validation stands
            overrides |= {"data.validation": str(validation)}
    return config.load(config_path, overrides)


def _print_result(result: dict[str, Any], as_json: bool) -> None:
    """The report on stdout (JSON, or the summary tables); exit 3 if the gate failed."""
    from rich.console import Console

    from prunecli.reporting import report as render

    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        render.render(result, Console())
    gate = result["gate"]
    if gate and not gate["passed"]:
        _fail(
            f"accuracy dropped by {100 * gate['accuracy_drop']:.2f} points, more than "
            f"--max-accuracy-drop {100 * gate['max_accuracy_drop']:.2f} (outputs were written)",
            EXIT_GATE,
        )


@main.command()
@_MODEL_CONFIG_DATA
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Output folder (default: <model stem>.analysis/ beside the model).",
)
@_SET
@click.option("--json", "as_json", is_flag=True, help="Print sensitivity.json on stdout.")
@_FORCE
@_NO_SAFE_MODE
@_LOG_FORMAT
@_IMPORT
@_QUIET
@_guarded
def analyze(
    model: Path,
    config_path: Path | None,
    data: Path | None,
    output: Path | None,
    assignments: tuple[str, ...],
    as_json: bool,
    force: bool,
    no_safe_mode: bool,
    log_format: str,
    imports: tuple[str, ...],
    quiet: bool,
    debug: bool,
) -> None:
    """Sensitivity scan: prune each layer alone at analyze.levels (no fine-tuning), measure.

    \b
      prunecli analyze model.h5 --config cfg.yaml -o scan/
      prunecli analyze model.keras --data data/ --set analyze.samples=500

    Writes sensitivity.json, .csv, .png, model.png and sensitivity.html into the folder.
    """
    settings = _settings(config_path, data, assignments, {}, imports)
    from prunecli import runtime

    runtime.start(settings.seed, native_logs=debug)
    from prunecli import progress
    from prunecli.analysis import sensitivity

    request = sensitivity.Request(
        model, settings, output, force=force, safe_mode=not no_safe_mode, config_file=config_path
    )
    document = sensitivity.run(request, progress.make(log_format, quiet))
    if as_json:
        click.echo(json.dumps(document, indent=2))


@main.command()
@_MODEL
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@click.option(
    "--groups",
    "show_groups",
    is_flag=True,
    help="Also list the coupled channel groups (structured pruning): members, frozen or why.",
)
@_NO_SAFE_MODE
@_IMPORT
@_guarded
def inspect(
    model: Path,
    as_json: bool,
    show_groups: bool,
    no_safe_mode: bool,
    imports: tuple[str, ...],
    debug: bool,
) -> None:
    """List MODEL's layers: parameters, current sparsity, prunable or not and why.

    \b
      prunecli inspect model.h5
      prunecli inspect model.keras --groups
      prunecli inspect model.keras --json | jq '.layers[] | select(.prunable)'
    """
    from prunecli import runtime

    runtime.start(native_logs=debug)
    from rich.console import Console

    from prunecli.reporting import inspection

    summary = inspection.summarize(
        model, safe_mode=not no_safe_mode, imports=imports, groups=show_groups
    )
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        inspection.render(summary, Console())
        if show_groups:
            inspection.render_groups(summary, Console())


@main.command()
@click.argument("config_file", type=click.Path(path_type=Path))
@click.option(
    "--set", "assignments", multiple=True, metavar="KEY=VALUE", help="Override a dotted key."
)
@click.option("--print", "show", is_flag=True, help="Print the fully resolved config as YAML.")
@functools.partial(_guarded, runs=False)
def validate(config_file: Path, assignments: tuple[str, ...], show: bool, debug: bool) -> None:
    """Check CONFIG_FILE without loading TensorFlow; --print shows every key resolved.

    \b
      prunecli validate configs/quickstart.yaml
      prunecli validate cfg.yaml --set prune.sparsity=0.9 --print
    """
    from prunecli import config

    settings = config.load(config_file, _overrides(assignments, {}))
    if show:
        click.echo(config.dump(settings), nl=False)
    else:
        click.echo(f"{config_file}: valid")


def entry() -> None:
    """The ``prunecli`` program (the console script and ``python -m prunecli``): ``main``,
    then the exit code it chose holds through interpreter teardown.

    After a command returns, Python and TensorFlow take a second or so to shut down, with
    the default signal handlers back: a SIGTERM there (a batch system preempting the job
    as it ends) made a finished run exit 143, and the job's retry then found the outputs in
    place (exit 2). Python's own handlers cannot cover that window (finalization resets
    them to the default), so SIGINT and SIGTERM are ignored for it: the command is over."""
    try:
        main()
    finally:
        _ignore_signals()


def _ignore_signals() -> None:
    """SIGINT/SIGTERM ignored from now on (flushed first: nothing is left to lose)."""
    import signal

    sys.stdout.flush()
    sys.stderr.flush()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def _overrides(assignments: tuple[str, ...], flags: dict[str, Any]) -> dict[str, Any]:
    """``--set`` pairs, then the dedicated flags (which win); paths become strings."""
    from prunecli import config

    merged = dict(config.parse_set(item) for item in assignments)
    for key, value in flags.items():
        if value is not None:
            merged[key] = str(value) if isinstance(value, Path) else value
    return merged
