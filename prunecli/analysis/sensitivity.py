"""``prunecli analyze``: load, scan, and write the scan as JSON, CSV, PNG plots and HTML.

Outputs, in ``-o DIR`` (default ``<model stem>.analysis/`` beside the model)::

    sensitivity.json   baseline, every point, per-layer sensitivity, timing
    sensitivity.csv    layer, params, sparsity, accuracy, loss (one row per point); under
                       granularity channel a row per group and level, ``layer`` the group's
                       name, plus group, channels, channels_removed, params_removed and
                       flops_removed (MACs)
    sensitivity.png    accuracy vs sparsity per layer, the most sensitive highlighted
    model.png          the whole model: layer scope and global scope
    sensitivity.html   both plots (embedded) and the table: one self-contained file

A new DIR is staged as a whole (a temporary folder renamed at the end); in an existing DIR
each file is staged and the files renamed together, so a failed scan leaves nothing.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prunecli.analysis import html, plots
from prunecli.analysis import scan as scanning
from prunecli.analysis.progress import scan_progress
from prunecli.config import Config
from prunecli.errors import ConfigError, OutputError
from prunecli.formats import staging
from prunecli.progress import Reporter
from prunecli.reporting.report import versions

FILES = ("sensitivity.json", "sensitivity.csv", "sensitivity.png", "model.png", "sensitivity.html")
COLUMNS = ("layer", "params", "sparsity", "accuracy", "loss")
# granularity channel: each row is a group (``layer`` holds its name), with what it removes
GROUP_COLUMNS = (
    *COLUMNS,
    "group",
    "channels",
    "channels_removed",
    "params_removed",
    "flops_removed",
)


@dataclass(frozen=True)
class Request:
    model: Path
    config: Config
    output: Path | None = None
    force: bool = False
    safe_mode: bool = True
    config_file: Path | None = None  # an input too: the scan's files must not replace it


def folder(request: Request) -> Path:
    return request.output or request.model.with_name(f"{request.model.stem}.analysis")


def preflight(request: Request) -> Path:
    """Checks that need no TensorFlow: the output folder can be written, data is given."""
    out = folder(request)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: is a file, expected a folder for the analysis")
    if not out.parent.is_dir():
        raise OutputError(f"{out}: parent folder {out.parent} does not exist")
    # The data folders are inputs too: a sensitivity.png in a class folder is a new
    # training image, a sensitivity.csv in a TFRecord shard folder matches its glob.
    inputs = staging.run_inputs(request.model, request.config, request.config_file)
    staging.check_distinct([out / name for name in FILES], inputs)
    if out.is_dir():
        for name in FILES:
            staging.check_target(out / name, force=request.force, inputs=inputs)
    settings = request.config.data
    if settings.train is None and settings.validation is None:
        raise ConfigError(
            "analyze measures validation accuracy: set data.validation (or data.train, "
            "whose data.validation_split is held out) or pass --data"
        )
    return out


def run(request: Request, reporter: Reporter) -> dict[str, Any]:
    """Scan ``request.model`` and write the outputs; return the JSON document."""
    from prunecli.analysis import context
    from prunecli.formats import model_io, safety

    out = preflight(request)
    model, source = model_io.load(
        request.model, safe_mode=request.safe_mode, imports=request.config.input.imports
    )
    safety.finite_weights(model, request.model)
    scope = context.prepare(model, source, request.config, reporter)
    with scan_progress(reporter, "scan") as progress:
        result = scanning.scan(
            scope.masker, scope.evaluator, request.config.analyze.levels, progress
        )
    document = to_document(result, request, scope, source.name)
    write(out, document)
    reporter.say(
        "wrote",
        f"wrote {out}: {result.evaluations} evaluations in {result.seconds:.1f} s; most "
        f"sensitive {'group' if 'groups' in document else 'layer'}: "
        f"{document['most_sensitive']}",
    )
    return document


def to_document(result: scanning.Result, request: Request, scope: Any, fmt: str) -> dict[str, Any]:
    """The scan as the JSON document (what every other output is drawn from)."""
    cfg = request.config
    return {
        "model": str(request.model),
        "format": fmt,
        "method": cfg.prune.method,
        "granularity": cfg.prune.model_dump(mode="json")["granularity"],
        "samples": scope.samples,
        "levels": list(cfg.analyze.levels),
        **curves(result, scope.masker),
        "evaluations": result.evaluations,
        "seconds": round(result.seconds, 4),
    }


def curves(result: scanning.Result, masker: Any) -> dict[str, Any]:
    """The scan's points and per-layer sensitivities: what the plots are drawn from (also
    the ``scan`` inside a prune report's ``auto`` section). Under channel granularity the
    rows are groups, listed with their members in ``groups``, and ``flops`` is the
    unpruned model's MACs (what ``flops_removed`` is out of)."""
    extra = {}
    if hasattr(masker, "describe"):
        extra = {"groups": masker.describe(), "flops": masker.total_macs()}
    return extra | {
        "baseline": {"accuracy": result.baseline.accuracy, "loss": result.baseline.loss},
        "layers": [
            {
                "layer": layer,
                "params": masker.params(layer),
                "sensitivity": result.sensitivity(layer),
            }
            for layer in result.layers
        ],
        "most_sensitive": result.most_sensitive(),
        "points": [point.row() for point in result.points],
    }


def columns(document: dict[str, Any]) -> tuple[str, ...]:
    """The table's columns: ``GROUP_COLUMNS`` for a channel-group scan."""
    return GROUP_COLUMNS if "groups" in document else COLUMNS


def to_csv(document: dict[str, Any]) -> str:
    buffer = io.StringIO()
    names = columns(document)
    writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for point in document["points"]:
        writer.writerow({key: _csv_cell(point[key]) for key in names})
    return buffer.getvalue()


def to_html(document: dict[str, Any], images: dict[str, bytes]) -> str:
    """The page, the two plots (``images``: file name -> PNG) embedded in it."""
    base, names = document["baseline"], columns(document)
    rows = "group" if "groups" in document else "layer"
    return html.page(
        f"prunecli sensitivity: {document['model']}",
        [
            html.paragraph(
                f"{document['method']} scores, {document['granularity']} granularity, "
                f"{document['samples']} validation samples, no fine-tuning. Unpruned: "
                f"accuracy {_percent(base['accuracy'])}, loss {base['loss']:.4f}. Most sensitive "
                f"{rows}: {document['most_sensitive']}."
            ),
            html.image(images["sensitivity.png"], f"each {rows} pruned alone"),
            html.image(images["model.png"], "the whole model pruned (layer and global scope)"),
            html.heading("Points"),
            html.table(names, [[p[key] for key in names] for p in document["points"]]),
        ],
    )


def write(out: Path, document: dict[str, Any]) -> None:
    """All five files, atomically (see the module docstring)."""
    images = {
        "sensitivity.png": plots.layer_curves(document),
        "model.png": plots.model_curves(document),
    }
    contents: dict[str, bytes] = {
        "sensitivity.json": (json.dumps(versions() | document, indent=2) + "\n").encode(),
        "sensitivity.csv": to_csv(document).encode(),
        **images,
        "sensitivity.html": to_html(document, images).encode(),
    }
    with staging.Staging() as stage:
        if out.is_dir():
            for name, blob in contents.items():
                stage.temp_for(out / name).write_bytes(blob)
        else:
            temp = stage.temp_dir_for(out)
            for name, blob in contents.items():
                (temp / name).write_bytes(blob)
        stage.commit()


def _csv_cell(value: Any) -> str:
    """Floats as ``repr`` (round-trips exactly), None as empty, the rest as text."""
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"
