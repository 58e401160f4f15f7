"""``prunecli prune --sweep 0.5,0.7,0.9``: one full prune + fine-tune per target, one
combined report of accuracy, size and latency against sparsity.

Each target runs the ordinary pipeline with ``prune.sparsity`` set to it and its outputs
named after it: ``out.keras`` becomes ``out.s50.keras`` (report ``out.s50.report.json``
...). The combined report is ``<stem>.sweep.json`` with ``.md``, ``.png`` and ``.html``
beside the output. Every target's outputs are checked before the first run starts, so a
clash fails in a second, not after the first fine-tune.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from prunecli import pipeline
from prunecli.analysis import html, plots
from prunecli.errors import ConfigError
from prunecli.formats import staging
from prunecli.progress import Reporter
from prunecli.reporting.report import versions

_COLUMNS = (
    ("sparsity", "target"),
    ("measured_sparsity", "sparsity"),
    ("accuracy", "accuracy"),
    ("size_gzip_bytes", "gzip bytes"),
    ("tflite_bytes", "tflite bytes"),
    ("latency_ms", "tflite latency ms"),
    ("output", "model"),
)


def tagged(path: Path, sparsity: float) -> Path:
    """``out.keras`` at 0.5 -> ``out.s50.keras`` (a suffix-less folder: ``out.s50``)."""
    tag = f"s{round(100 * sparsity)}"
    return path.with_name(
        f"{path.stem}.{tag}{path.suffix}" if path.suffix else f"{path.name}.{tag}"
    )


def requests(request: pipeline.Request) -> list[pipeline.Request]:
    """One request per target: sparsity set, outputs tagged, no sweep inside."""
    cfg = request.config
    targets = cfg.prune.sweep or []
    if len({round(100 * s) for s in targets}) != len(targets):
        raise ConfigError(f"prune.sweep: two targets round to the same file name, got {targets}")
    main = pipeline.targets(request)
    made = []
    for target in targets:
        output = cfg.output.model_copy(
            update={
                "path": tagged(main.model, target),
                "report": cfg.output.report and tagged(cfg.output.report, target),
            }
        )
        prune = cfg.prune.model_copy(update={"sparsity": target, "sweep": None})
        settings = cfg.model_copy(update={"prune": prune, "output": output})
        made.append(dataclasses.replace(request, config=settings))
    return made


def combined_paths(request: pipeline.Request) -> dict[str, Path]:
    main = pipeline.targets(request).model
    stem = main.stem if main.suffix else main.name
    return {kind: main.with_name(f"{stem}.sweep.{kind}") for kind in ("json", "md", "png", "html")}


def run(request: pipeline.Request, reporter: Reporter) -> dict[str, Any]:
    """Every target's prune, then the combined report; return it."""
    runs = requests(request)
    paths = combined_paths(request)
    for path in paths.values():
        staging.check_target(path, force=request.force, inputs=(request.model,))
    for each in runs:
        pipeline.preflight(each)
    rows = []
    for each in runs:
        reporter.say("message", f"sweep: sparsity {each.config.prune.sparsity}")
        rows.append(_row(pipeline.run(each, reporter), each.config.prune.sparsity))
    combined = versions() | {
        "model": str(request.model),
        "sweep": request.config.prune.sweep,
        "runs": rows,
    }
    with staging.Staging() as stage:
        stage.write_text(paths["json"], json.dumps(combined, indent=2) + "\n")
        stage.write_text(paths["md"], to_markdown(combined, paths["png"].name))
        png = plots.sweep(rows)
        stage.temp_for(paths["png"]).write_bytes(png)
        if request.config.output.html:
            stage.write_text(paths["html"], to_html(combined, png))
        stage.commit()
    return combined


def _row(result: dict[str, Any], target: float) -> dict[str, Any]:
    """What one target gave: the after-side numbers, the .tflite export's where there is one."""
    tflite = next((e for e in result["exports"] if e["format"] == "tflite"), None)
    after = result["after"]
    return {
        "sparsity": target,
        "measured_sparsity": after["sparsity"],
        "accuracy": after["accuracy"],
        "loss": after["loss"],
        "params_nonzero": after["params_nonzero"],
        "size_bytes": after["size_bytes"],
        "size_gzip_bytes": after["size_gzip_bytes"],
        "tflite_bytes": tflite and tflite["size_bytes"],
        "latency_ms": tflite and tflite["latency_ms"],
        "before_accuracy": result["before"]["accuracy"],
        "gate": result["gate"],
        "output": result["output"]["path"],
    }


def _cells(row: dict[str, Any]) -> list[str]:
    return ["n/a" if row[key] is None else str(row[key]) for key, _ in _COLUMNS]


def to_markdown(combined: dict[str, Any], image: str) -> str:
    lines = [
        f"# prunecli sweep: {combined['model']}",
        "",
        "| " + " | ".join(label for _, label in _COLUMNS) + " |",
        "|" + "---:|" * (len(_COLUMNS) - 1) + "---|",
        *("| " + " | ".join(_cells(row)) + " |" for row in combined["runs"]),
        "",
        f"![accuracy, size and latency against sparsity]({image})",
        "",
    ]
    return "\n".join(lines)


def to_html(combined: dict[str, Any], png: bytes) -> str:
    """The combined table and the plot embedded (one self-contained file)."""
    return html.page(
        f"prunecli sweep: {combined['model']}",
        [
            html.table([label for _, label in _COLUMNS], [_cells(r) for r in combined["runs"]]),
            html.image(png, "accuracy, size and latency against sparsity"),
        ],
    )


def summary(combined: dict[str, Any]) -> str:
    """The table as plain text for stdout (without --json)."""
    return to_markdown(combined, Path(combined["model"]).stem + ".sweep.png")
