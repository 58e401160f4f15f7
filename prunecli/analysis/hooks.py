"""The analysis features' few touch points in ``pipeline``, in one place, so the pipeline
gains a line per feature: preflight of the extra outputs, ``sparsity: auto`` resolved into
per-layer targets before pruning, and the ``auto`` section added to the report."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from prunecli.analysis import figures
from prunecli.config import Config
from prunecli.errors import ConfigError
from prunecli.formats import staging
from prunecli.progress import Reporter


def preflight(
    cfg: Config, markdown: Path, force: bool, model: Path, report: Path | None = None
) -> None:
    """Before any work: the plot and HTML files may be written, each at a path of its own
    (``--report r.html`` would put the JSON where the HTML page goes); auto has data to
    scan."""
    staging.check_distinct([p for p in (report, markdown) if p] + figures.targets(markdown), ())
    for path in figures.targets(markdown):
        staging.check_target(path, force=force, inputs=(model,))
    if cfg.prune.sparsity == "auto" and cfg.data.train is None and cfg.data.validation is None:
        raise ConfigError(
            "prune.sparsity auto scans validation accuracy: set data.validation or --data"
        )


def auto(request: Any, model: Any, prepared: Any, reporter: Reporter) -> tuple[Any, Any]:
    """``sparsity: auto``: scan, allocate, and (the request with the per-layer targets in
    its config, the report's ``auto`` section); ``prepared.layers`` are selected again
    with those targets. The model's weights are as loaded afterwards. Other requests
    pass through with None."""
    cfg = request.config
    if cfg.prune.sparsity != "auto":
        return request, None
    from prunecli.analysis import allocate, context
    from prunecli.pruning import selection

    task = prepared.task
    if task is None or task.kind == "regression":
        raise ConfigError("prune.sparsity auto needs a classifier: this model has no accuracy")
    loss = prepared.compile_args.get("loss")
    scope = context.build(model, prepared.layers, cfg, prepared.splits, task, loss)
    section = allocate.plan(scope, cfg, reporter)
    reporter.say("message", _line(section))
    resolved = allocate.resolved(cfg, section)
    prepared.layers = selection.select(model, resolved.prune)
    return dataclasses.replace(request, config=resolved), section


def _line(section: dict[str, Any]) -> str:
    """``auto: 61.5% sparsity within 1.00 points (uniform within budget: 40.2%)``, with
    the shares of FLOPs under channel granularity."""
    uniform = section["uniform_within_budget"]
    text = (
        f"auto: {100 * section['sparsity']:.1f}% sparsity within "
        f"{100 * section['max_accuracy_drop']:.2f} points (uniform within budget: "
        f"{100 * uniform['sparsity']:.1f}%)"
    )
    if section.get("flops_removed") is not None:
        text += (
            f"; FLOPs removed {100 * section['flops_removed']:.1f}% (uniform within "
            f"budget: {100 * (uniform['flops_removed'] or 0):.1f}%)"
        )
    return text


def add_auto(result: dict[str, Any], section: dict[str, Any] | None) -> None:
    """The report's ``auto`` section (only with sparsity auto), with the drop measured
    after fine-tuning beside the predicted one."""
    if section is None:
        return
    before, after = result["before"]["accuracy"], result["after"]["accuracy"]
    measured = None if before is None or after is None else before - after
    result["auto"] = section | {"measured_drop": measured}
