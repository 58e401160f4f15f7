"""The plots every prune report gains, and its HTML view, staged with the report.

Beside ``<stem>.report.md`` (names from the Markdown report's path)::

    <stem>.report.sparsity.png   per-layer sparsity bars (always)
    <stem>.report.schedule.png   sparsity over optimizer steps (when masks changed while
                                 fine-tuning: a gradual schedule)
    <stem>.report.loss.png       training loss per epoch (when fine-tuned)
    <stem>.report.sensitivity.png   the scan's per-layer curves (``sparsity: auto``)
    <stem>.report.html           the tables and the plots (``output.html``)

The Markdown report references the PNGs by file name; the HTML page embeds them (data
URIs), so it is one self-contained file that opens from disk with no server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prunecli.analysis import html, plots
from prunecli.formats.staging import Staging

PLOTS = ("sparsity", "schedule", "loss", "sensitivity")


def targets(markdown: Path) -> list[Path]:
    """Every file this module may write for a report (preflight checks them all)."""
    return [markdown.with_suffix(f".{name}.png") for name in PLOTS] + [
        markdown.with_suffix(".html")
    ]


def drawn(report: dict[str, Any]) -> dict[str, bytes]:
    """The plots that make sense for this run, by name."""
    figures = {"sparsity": plots.sparsity_bars(report["layers"])}
    tuned = report["finetune"]
    updates = tuned["mask_updates"]
    if len({round(u["sparsity"], 6) for u in updates}) > 1 and tuned["steps"]:
        figures["schedule"] = plots.schedule(updates)
    if tuned.get("loss_history"):
        figures["loss"] = plots.losses(tuned["loss_history"])
    if report.get("auto"):  # the scan that chose the targets
        figures["sensitivity"] = plots.layer_curves(report["auto"]["scan"])
    return figures


_CAPTIONS = {
    "sparsity": "sparsity per layer",
    "schedule": "sparsity over fine-tuning",
    "loss": "training loss per epoch",
    "sensitivity": "sensitivity scan: each layer pruned alone (sparsity: auto)",
}


def stage(
    stage: Staging, report: dict[str, Any], markdown_path: Path, markdown: str, page: bool
) -> None:
    """Stage the plots, the Markdown report (with the plots referenced) and, when ``page``,
    the HTML report."""
    figures = drawn(report)
    names = {name: markdown_path.with_suffix(f".{name}.png").name for name in figures}
    for name, blob in figures.items():
        stage.temp_for(markdown_path.with_name(names[name])).write_bytes(blob)
    lines = [f"![{_CAPTIONS[name]}]({names[name]})\n" for name in figures]
    stage.write_text(markdown_path, markdown + _auto_markdown(report) + "\n" + "\n".join(lines))
    if page:
        stage.write_text(markdown_path.with_suffix(".html"), to_html(report, figures))


def _pt(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} pt"


def _auto_summary(auto: dict[str, Any]) -> str:
    """One sentence: the total, its three drops, and the uniform comparisons."""
    return (
        f"Total {100 * auto['sparsity']:.2f}%: predicted drop {_pt(auto['predicted_drop'])}, "
        f"scanned {_pt(auto['scan_drop'])}, measured {_pt(auto.get('measured_drop'))}. "
        f"Uniform at the same sparsity (no fine-tuning): drop "
        f"{_pt(auto['uniform']['scan_drop'])}; highest uniform sparsity within the budget: "
        f"{100 * auto['uniform_within_budget']['sparsity']:.2f}%." + _flops_summary(auto)
    )


def _flops_summary(auto: dict[str, Any]) -> str:
    """Channel granularity: the shares of FLOPs (MACs) each allocation removes."""
    if auto.get("flops_removed") is None:
        return ""
    within = auto["uniform_within_budget"].get("flops_removed")
    return (
        f" FLOPs removed (predicted from the shapes): {100 * auto['flops_removed']:.2f}%; "
        f"highest uniform within the budget: {100 * (within or 0):.2f}%."
    )


def _auto_markdown(report: dict[str, Any]) -> str:
    """The ``sparsity: auto`` section: per-layer targets and the drops (empty otherwise)."""
    auto = report.get("auto")
    if not auto:
        return ""
    header, rows = _allocation_rows(auto)
    title = f"## sparsity: auto (max accuracy drop {_pt(auto['max_accuracy_drop'])})"
    table = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    table += ["| " + " | ".join(row) + " |" for row in rows]
    lines = ["", title, "", *table, "", _auto_summary(auto)]
    return "\n".join([*lines, ""])


def _allocation_rows(auto: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The allocation table: layer and sparsity; under channel granularity each group's
    channels kept of its channels too (``| conv2 | 50.0% | 8 of 16 |``)."""
    groups = {g["group"]: g for g in auto.get("groups") or []}
    header = ["layer", "sparsity"] + (["channels kept"] if groups else [])
    rows = []
    for layer, level in auto["allocation"].items():
        row = [layer, f"{100 * level:.1f}%"]
        if layer in groups:
            row.append(f"{groups[layer]['channels_kept']} of {groups[layer]['channels']}")
        rows.append(row)
    return header, rows


def to_html(report: dict[str, Any], images: dict[str, bytes]) -> str:
    """The HTML report, ``images`` (plot name -> PNG) embedded: one file, nothing beside it."""
    before, after = report["before"], report["after"]
    keys = ("params_nonzero", "sparsity", "size_bytes", "size_gzip_bytes", "accuracy", "loss")
    blocks = [
        html.paragraph(f"Output: {report['output']['path']} ({report['output']['format']})"),
        html.table(["", "before", "after"], [[key, before[key], after[key]] for key in keys]),
    ]
    if report.get("auto"):
        auto = report["auto"]
        blocks += [
            html.heading(f"sparsity: auto (max accuracy drop {_pt(auto['max_accuracy_drop'])})"),
            html.paragraph(_auto_summary(auto)),
            html.table(*_allocation_rows(auto)),
        ]
    blocks += [html.image(png, _CAPTIONS[key]) for key, png in images.items()]
    blocks += [
        html.heading("Layers"),
        html.table(
            ["layer", "type", "params", "target", "sparsity", "note"],
            [
                [
                    r["path"],
                    r["type"],
                    r["params"],
                    r["target_sparsity"],
                    r["sparsity"],
                    r["reason"],
                ]
                for r in report["layers"]
            ],
        ),
    ]
    return html.page(f"prunecli report: {report['input']['path']}", blocks)


class LossHistory:
    """A Keras callback factory's product: each epoch's training loss, for the loss plot.

    Built lazily (``callback()``) so importing this module needs no Keras."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def callback(self) -> Any:
        import keras

        rows = self.rows

        class _Record(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                loss = (logs or {}).get("loss")
                if loss is not None:
                    rows.append({"epoch": epoch + 1, "loss": float(loss)})

        return _Record()
