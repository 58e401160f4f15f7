"""The analysis features' few touch points in ``pipeline``, in one place, so the pipeline
gains a line per feature: preflight of the extra outputs, ``sparsity: auto`` resolved into
per-layer targets before pruning, and the report's plots and HTML staged with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from prunecli import data
from prunecli.analysis import figures
from prunecli.config import Config
from prunecli.errors import ConfigError
from prunecli.formats import staging
from prunecli.pruning.selection import LayerInfo
from prunecli.reporting import evaluate


def preflight(cfg: Config, markdown: Path, force: bool, model: Path) -> None:
    """Before any work: the plot and HTML files may be written; auto has data to scan."""
    for path in figures.targets(markdown):
        staging.check_target(path, force=force, inputs=(model,))
    if cfg.prune.sparsity == "auto" and cfg.data.train is None and cfg.data.validation is None:
        raise ConfigError(
            "prune.sparsity auto scans validation accuracy: set data.validation or --data"
        )


def auto(
    model: Any,
    layers: list[LayerInfo],
    cfg: Config,
    splits: data.Splits,
    task: evaluate.Task | None,
    loss: Any,
    console: Console | None,
) -> tuple[Config, dict[str, Any] | None]:
    """``sparsity: auto``: scan, allocate, and the config with the per-layer targets (the
    model's weights are as loaded again afterwards); other configs pass through."""
    if cfg.prune.sparsity != "auto":
        return cfg, None
    from prunecli.analysis import allocate, context

    if task is None or task.kind == "regression":
        raise ConfigError("prune.sparsity auto needs a classifier: this model has no accuracy")
    scope = context.build(model, layers, cfg, splits, task, loss)
    section = allocate.plan(scope, cfg, console)
    if console is not None:
        console.print(
            f"auto: {100 * section['sparsity']:.1f}% sparsity within "
            f"{100 * section['max_accuracy_drop']:.2f} points (uniform within budget: "
            f"{100 * section['uniform_within_budget']['sparsity']:.1f}%)",
            highlight=False,
            soft_wrap=True,
        )
    return allocate.resolved(cfg, section), section


def measured(
    section: dict[str, Any] | None, before: dict[str, Any], after: dict[str, Any]
) -> dict[str, Any] | None:
    """The auto section with the drop measured after fine-tuning (None stays None)."""
    if section is None or before["accuracy"] is None or after["accuracy"] is None:
        return section
    return section | {"measured_drop": before["accuracy"] - after["accuracy"]}
