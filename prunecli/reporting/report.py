"""The before/after report: one dict (the JSON), rendered as a rich table and as Markdown.

The JSON is the contract (``schema_version`` 1; CI pipelines read it); the table and the
Markdown are views of the same dict, so they can never disagree with it.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from prunecli import __version__
from prunecli.config import Config
from prunecli.core import masking
from prunecli.core.granularity import Pattern
from prunecli.pruning.selection import LayerInfo

SCHEMA_VERSION = 1
CONSOLE_LAYERS = 40  # a longer layer table is summarised on the console (full in JSON / .md)
CONSOLE_LARGEST = 30  # how many of the largest layers that summary shows

# (field, label, how to show one value) for the summary rows.
_ROWS: tuple[tuple[str, str, str], ...] = (
    ("params_total", "parameters", "int"),
    ("params_nonzero", "non-zero parameters", "int"),
    ("sparsity", "sparsity (selected kernels)", "pct"),
    ("size_bytes", "size on disk", "bytes"),
    ("size_gzip_bytes", "size gzipped", "bytes"),
    ("accuracy", "accuracy", "pct"),
    ("loss", "loss", "float"),
    ("flops", "FLOPs (MACs, batch 1)", "int"),
    ("latency_ms", "latency ms (batch 1, CPU)", "ms"),
)


def build(
    *,
    config: Config,
    environment: dict[str, Any],
    input: dict[str, Any],
    output: dict[str, Any],
    exports: list[dict[str, Any]],
    before: dict[str, Any],
    after: dict[str, Any],
    layers: list[dict[str, Any]],
    finetune: dict[str, Any],
    data: dict[str, Any],
    timing: dict[str, float],
    gate: dict[str, Any] | None,
    warnings: list[str] | None = None,
    speedup: float | None = None,
    latency_backend: str | None = None,
    groups: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The report (``report.json``; README "Report fields") from the stages' results, in
    its documented key order. The one place a report is assembled. ``speedup`` is
    before / after ``latency_ms``; ``groups`` the channel groups (granularity channel)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "prunecli_version": __version__,
        "environment": environment,
        "config": config.model_dump(mode="json"),
        "input": input,
        "output": output,
        "exports": exports,
        "before": before,
        "after": after,
        "speedup": speedup,
        "latency_backend": latency_backend,
        "layers": layers,
        "groups": groups,
        "finetune": finetune,
        "data": data,
        "timing": timing,
        "gate": gate,
        "warnings": warnings or [],
    }


def model_stats(model: Any, layers: list[LayerInfo]) -> dict[str, Any]:
    """Parameter counts over the whole model; sparsity over the selected kernels."""
    weights = [np.asarray(w) for w in model.weights]
    kernels = [np.asarray(v) for info in layers if info.selected for v in info.kernels.values()]
    prunable = sum(k.size for k in kernels)
    zeros = sum(k.size - np.count_nonzero(k) for k in kernels)
    total = int(sum(w.size for w in weights))
    return {
        "params_total": total,
        "params_nonzero": int(sum(np.count_nonzero(w) for w in weights)),
        "prunable_params": int(prunable),
        "prunable_share": float(prunable / total) if total else 0.0,
        "sparsity": float(zeros / prunable) if prunable else 0.0,
    }


def layer_rows(layers: list[LayerInfo], pattern: Pattern) -> list[dict[str, Any]]:
    """One row per layer with weights; ``pattern_ok`` checks N:M / block on the kernels
    (null for unstructured and for layers left alone)."""
    return [
        {
            "path": info.path,
            "type": info.type,
            "params": info.params,
            "target_sparsity": info.target,
            "sparsity": info.kernel_sparsity(),
            "pruned": info.selected,
            "reason": info.reason,
            "pattern_ok": _pattern_ok(info, pattern),
            "kernels": info.kernel_paths(),
            "trainable": info.trainable,
        }
        for info in layers
    ]


def _pattern_ok(info: LayerInfo, pattern: Pattern) -> bool | None:
    if not info.selected or not pattern.checks_layout:
        return None
    return all(
        masking.pattern_ok(np.asarray(variable), pattern, info.axes[attr])
        for attr, variable in info.kernels.items()
    )


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2) + "\n"


def render(report: dict[str, Any], console: Console) -> None:
    """The summary and layer tables on ``console`` (stderr: stdout is for results)."""
    summary = Table(title="prunecli: before / after", title_justify="left")
    for name in ("", "before", "after", "change"):
        summary.add_column(name, justify="left" if not name else "right")
    for row in _summary_rows(report):
        summary.add_row(*row)
    layers = Table(title="layers", title_justify="left")
    for name in ("layer", "type", "params", "target", "sparsity", "note"):
        numeric = name in ("params", "target", "sparsity")
        # fold: a long layer path wraps onto the next line, never ends in "…" (CI logs are
        # not terminals and rich gives them 80 columns)
        layers.add_column(name, justify="right" if numeric else "left", overflow="fold")
    cells = _layer_cells(report)
    shown, hidden = _console_layers(report["layers"])
    for index in shown:
        layers.add_row(*cells[index])
    console.print(summary)
    console.print(layers)
    if hidden:
        console.print(
            f"… {hidden} more layers (the JSON and Markdown reports list every layer)",
            highlight=False,
            soft_wrap=True,
        )
    if report.get("exports"):
        deployed = Table(title="deployed (before → after)", title_justify="left")
        for name in _EXPORT_COLUMNS:
            justify = "left" if name == "artifact" else "right"
            deployed.add_column(name, justify=justify, overflow="fold")
        for entry in report["exports"]:
            deployed.add_row(*_export_cells(entry))
        console.print(deployed)
        for note in _export_notes(report["exports"]):
            console.print(note, highlight=False, soft_wrap=True)


def _console_layers(rows: list[dict[str, Any]]) -> tuple[list[int], int]:
    """Which layer rows the console shows, in model order, and how many it leaves out: all
    of them up to ``CONSOLE_LAYERS``, else the ``CONSOLE_LARGEST`` largest by parameters
    (1,366 rows of NASNetMobile help nobody in a terminal)."""
    if len(rows) <= CONSOLE_LAYERS:
        return list(range(len(rows))), 0
    largest = sorted(range(len(rows)), key=lambda i: -rows[i]["params"])[:CONSOLE_LARGEST]
    return sorted(largest), len(rows) - CONSOLE_LARGEST


def to_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# prunecli report: {report['input']['path']}",
        "",
        f"Output: `{report['output']['path']}` ({report['output']['format']})",
        "",
        *_config_lines(report),
        "",
        "| | before | after | change |",
        "|---|---:|---:|---:|",
        *("| " + " | ".join(row) + " |" for row in _summary_rows(report)),
        "",
        "| layer | type | params | target | sparsity | note |",
        "|---|---|---:|---:|---:|---|",
        *("| " + " | ".join(row) + " |" for row in _layer_cells(report)),
        "",
        *_export_lines(report.get("exports") or []),
        *_timing_lines(report.get("timing") or {}),
    ]
    gate = report.get("gate")
    if gate:
        verdict = "passed" if gate["passed"] else "FAILED"
        lines += [
            f"Gate: accuracy drop {_fmt(gate['accuracy_drop'], 'pct')} "
            f"(max {_fmt(gate['max_accuracy_drop'], 'pct')}): {verdict}",
            "",
        ]
    return "\n".join(lines)


def _config_lines(report: dict[str, Any]) -> list[str]:
    """What was run, in one table: method, granularity, scope, target, schedule, epochs."""
    prune, tune = report["config"]["prune"], report["config"]["finetune"]
    done = report.get("finetune") or {}
    rows = [
        ("method", prune["method"]),
        ("granularity", _granularity(prune["granularity"])),
        ("scope", prune["scope"]),
        ("target sparsity", _fmt(prune["sparsity"], "pct")),
        ("schedule", _schedule(prune["schedule"])),
        ("epochs", f"{tune['epochs']} ({done.get('steps', 0):,} steps run)"),
        ("loss", _loss_text(done.get("loss"))),
    ]
    return ["| setting | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]


def _granularity(value: Any) -> str:
    if isinstance(value, dict):
        return "block " + "x".join(str(n) for n in value["block"])
    return str(value)


def _schedule(settings: dict[str, Any]) -> str:
    """``polynomial`` with its curve, ``iterative`` with its rounds: what shapes the run."""
    kind = settings["type"]
    if kind == "polynomial":
        return (
            f"polynomial, epochs {settings['start_epoch']:g} → {settings['end_epoch']:g}, "
            f"from {_fmt(settings['initial_sparsity'], 'pct')}, power {settings['power']:g}, "
            f"masks every {settings['frequency']} steps"
        )
    if kind == "constant":
        return f"constant from epoch {settings['start_epoch']:g}"
    if kind == "iterative":
        return f"iterative, {settings['steps']} rounds"
    return kind.replace("_", "-")


def _loss_text(loss: Any) -> str:
    if loss is None:
        return "n/a"
    if isinstance(loss, dict):
        return ", ".join(f"{key}: {value}" for key, value in loss.items())
    return ", ".join(map(str, loss)) if isinstance(loss, list) else str(loss)


def _timing_lines(timing: dict[str, float]) -> list[str]:
    """Seconds per stage; ``total_s`` last, the whole run."""
    if not timing:
        return []
    stages = [(k, v) for k, v in timing.items() if k != "total_s"] + [
        ("total_s", timing.get("total_s", 0.0))
    ]
    return [
        "| stage | seconds |",
        "|---|---:|",
        *(f"| {key.removesuffix('_s')} | {value:.2f} |" for key, value in stages),
        "",
    ]


_EXPORT_COLUMNS = ("artifact", "size", "gzipped", "accuracy", "latency ms (batch 1)")


def _export_cells(entry: dict[str, Any]) -> list[str]:
    """One deployed artifact (SavedModel, TFLite), measured by running it: before → after."""
    before = entry["before"] or {}
    return [f"{entry['path']} ({entry['format']})"] + [
        f"{_fmt(before.get(key), kind)} → {_fmt(entry[key], kind)}"
        for key, kind in (
            ("size_bytes", "bytes"),
            ("size_gzip_bytes", "bytes"),
            ("accuracy", "pct"),
            ("latency_ms", "float"),
        )
    ]


def _export_notes(exports: list[dict[str, Any]]) -> list[str]:
    return [f"note ({entry['format']}): {entry['note']}" for entry in exports if entry["note"]]


def _export_lines(exports: list[dict[str, Any]]) -> list[str]:
    if not exports:
        return []
    lines = [
        "| " + " | ".join(_EXPORT_COLUMNS) + " |",
        "|---|---:|---:|---:|---:|",
        *("| " + " | ".join(_export_cells(entry)) + " |" for entry in exports),
        "",
    ]
    return lines + [line for note in _export_notes(exports) for line in (note, "")]


def _summary_rows(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    before, after = report["before"], report["after"]
    return [
        (
            label,
            _fmt(before.get(key), kind),
            _fmt(after.get(key), kind),
            _change(before.get(key), after.get(key), kind),
        )
        for key, label, kind in _ROWS
    ]


def _layer_cells(report: dict[str, Any]) -> list[tuple[str, ...]]:
    # Under global scope the target is the whole selection's: each layer lands where the
    # shared threshold puts it, so the note says so rather than implying a miss.
    shared = report["config"]["prune"]["scope"] == "global"
    return [
        (
            row["path"],
            row["type"],
            f"{row['params']:,}",
            _fmt(row["target_sparsity"], "pct"),
            _fmt(row["sparsity"], "pct"),
            row["reason"]
            or _channels(row)
            or ("global threshold" if shared and row["pruned"] else ""),
        )
        for row in report["layers"]
    ]


def _channels(row: dict[str, Any]) -> str:
    """``channels 16 -> 8 (group 1)`` under granularity channel (else empty)."""
    if row.get("channels_before") is None:
        return ""
    return f"channels {row['channels_before']} → {row['channels_after']} (group {row['group']})"


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "n/a"
    if kind == "int":
        return f"{value:,}"
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind == "bytes":
        return _bytes(value)
    return f"{value:.4f}"


def _change(before: Any, after: Any, kind: str) -> str:
    if before is None or after is None:
        return ""
    if kind == "pct":
        return f"{100 * (after - before):+.2f} pt"
    if kind in ("int", "bytes", "ms") and before:
        return f"{after / before:.2f}x"
    if kind == "float":
        return f"{after - before:+.4f}"
    return ""


def _bytes(count: int) -> str:
    if count < 1024:
        return f"{count:,} B"
    if count < 1024**2:
        return f"{count / 1024:,.1f} KiB"
    return f"{count / 1024**2:,.2f} MiB"
