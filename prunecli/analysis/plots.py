"""PNG plots (matplotlib, Agg backend: no display needed) of a scan, a prune run, a sweep.

Every figure has the same size (``SIZE`` inches at ``DPI``: 800 x 500 pixels) and is drawn
into bytes, so callers write them through ``Staging`` like every other output. matplotlib
is imported inside the functions: ``prunecli validate`` and ``--help`` never load it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

SIZE = (8.0, 5.0)
DPI = 100
PIXELS = (int(SIZE[0] * DPI), int(SIZE[1] * DPI))  # (width, height) of every PNG
HIGHLIGHT = "#d62728"


def _figure(title: str, xlabel: str, ylabel: str) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    figure = Figure(figsize=SIZE, dpi=DPI)
    axes = figure.add_subplot()
    axes.set(title=title, xlabel=xlabel, ylabel=ylabel)
    axes.grid(True, alpha=0.3)
    return figure, axes


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    # The Software tag lets a later --force run recognise its own plot (formats/outputs).
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": "prunecli"})
    return buffer.getvalue()


def _metric(scan: dict[str, Any]) -> str:
    """Accuracy when the task has one, else loss (regression)."""
    return "accuracy" if scan["baseline"]["accuracy"] is not None else "loss"


def layer_curves(scan: dict[str, Any]) -> bytes:
    """One accuracy-vs-sparsity curve per layer; the most sensitive in red, on top."""
    metric = _metric(scan)
    title, xlabel = "Sensitivity: each layer pruned alone", "sparsity"
    if "groups" in scan:  # a channel scan: rows are groups, levels shares of their channels
        title, xlabel = "Sensitivity: each channel group pruned alone", "channels removed"
    figure, axes = _figure(title, xlabel, metric)
    worst = scan["most_sensitive"]
    for layer in scan["layers"]:
        curve = [p for p in scan["points"] if p["layer"] == layer["layer"]]
        mine = layer["layer"] == worst
        xs, ys = _from_zero(scan, curve, metric)
        axes.plot(
            xs,
            ys,
            marker="o",
            markersize=3,
            linewidth=2.5 if mine else 1.0,
            color=HIGHLIGHT if mine else None,
            alpha=1.0 if mine else 0.6,
            zorder=3 if mine else 2,
            label=f"{layer['layer']} (most sensitive)" if mine else layer["layer"],
        )
    _baseline(axes, scan, metric)
    if len(scan["layers"]) <= 12:
        axes.legend(fontsize="small")
    return _png(figure)


def model_curves(scan: dict[str, Any]) -> bytes:
    """The whole model at each level: every layer at it (layer scope), one threshold (global)."""
    metric = _metric(scan)
    figure, axes = _figure("Sensitivity: the whole model pruned", "sparsity", metric)
    for name, label in (("<model:layer>", "layer scope"), ("<model:global>", "global scope")):
        curve = [p for p in scan["points"] if p["layer"] == name]
        if curve:
            axes.plot(*_from_zero(scan, curve, metric), marker="o", label=label)
    _baseline(axes, scan, metric)
    axes.legend()
    return _png(figure)


def _from_zero(
    scan: dict[str, Any], curve: list[dict[str, Any]], metric: str
) -> tuple[list[float], list[float]]:
    """A curve's (sparsity, metric) points, starting from the unpruned model at 0."""
    start = [] if any(p["sparsity"] == 0 for p in curve) else [(0.0, scan["baseline"][metric])]
    pairs = start + [(p["sparsity"], p[metric]) for p in curve]
    return [x for x, _ in pairs], [y for _, y in pairs]


def _baseline(axes: Any, scan: dict[str, Any], metric: str) -> None:
    axes.axhline(scan["baseline"][metric], color="gray", linestyle="--", label="unpruned")


def sparsity_bars(layers: Sequence[dict[str, Any]]) -> bytes:
    """Each layer's sparsity after pruning (layers left alone show 0)."""
    figure, axes = _figure("Sparsity per layer", "layer", "sparsity")
    names = [row["path"] for row in layers]
    values = [row["sparsity"] or 0.0 for row in layers]
    colors = ["#1f77b4" if row["pruned"] else "#bbbbbb" for row in layers]
    axes.bar(range(len(names)), values, color=colors)
    axes.set_xticks(range(len(names)), names, rotation=60 if len(names) > 4 else 0, fontsize=7)
    axes.set_ylim(0, 1)
    return _png(figure)


def schedule(updates: Sequence[dict[str, float]]) -> bytes:
    """The selected kernels' sparsity after each mask update, over optimizer steps."""
    figure, axes = _figure("Schedule: sparsity over fine-tuning", "optimizer step", "sparsity")
    axes.step([u["step"] for u in updates], [u["sparsity"] for u in updates], where="post")
    axes.plot([u["step"] for u in updates], [u["sparsity"] for u in updates], "o", markersize=3)
    axes.set_ylim(0, 1)
    return _png(figure)


def losses(history: Sequence[dict[str, float]]) -> bytes:
    """Training loss at the end of each fine-tuning epoch."""
    figure, axes = _figure("Loss over fine-tuning", "epoch", "training loss")
    axes.plot([h["epoch"] for h in history], [h["loss"] for h in history], marker="o")
    return _png(figure)


def sweep(rows: Sequence[dict[str, Any]]) -> bytes:
    """The trade-off a design review asks for: accuracy, gzipped size and (where a .tflite
    was exported) latency against the sweep's target sparsity."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    figure = Figure(figsize=SIZE, dpi=DPI)
    panels = [("accuracy", "accuracy"), ("size_gzip_bytes", "gzipped size (KiB)")]
    if any(row.get("latency_ms") is not None for row in rows):
        panels.append(("latency_ms", "latency ms (tflite, batch 1)"))
    for index, (key, label) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, len(panels), index)
        points = [(row["sparsity"], row[key]) for row in rows if row.get(key) is not None]
        scale = 1024 if key == "size_gzip_bytes" else 1
        axes.plot([x for x, _ in points], [y / scale for _, y in points], marker="o")
        axes.set(xlabel="target sparsity", title=label)
        axes.grid(True, alpha=0.3)
    figure.suptitle("Sweep: what each sparsity costs")
    return _png(figure)
