"""``prunecli inspect``: what a model holds and what prunecli could prune in it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from prunecli.errors import ConfigError
from prunecli.formats import model_io
from prunecli.pruning import selection


def summarize(
    path: Path,
    safe_mode: bool = True,
    imports: list[str] | tuple[str, ...] = (),
    groups: bool = False,
) -> dict[str, Any]:
    """Every layer with weights: params, current kernel sparsity, prunable or why not, and
    the paths of its kernels (what ``prune.layers`` regexes match); and the channel groups
    structured pruning would see (``groups`` None with ``groups_reason`` when the model has
    no layer graph; with ``groups=True`` that is an error, since the user asked for them)."""
    model, source = model_io.load(path, safe_mode=safe_mode, imports=imports)
    weights = [np.asarray(w) for w in model.weights]
    found, reason = _groups(model, required=groups)
    return {
        "path": str(path),
        "format": source.name,
        "supports": [*source.supports, *(["channel"] if _channels(model, source, found) else [])],
        "params_total": int(sum(w.size for w in weights)),
        "params_nonzero": int(sum(np.count_nonzero(w) for w in weights)),
        "layers": [
            {
                "path": info.path,
                "type": info.type,
                "params": info.params,
                "sparsity": info.kernel_sparsity(),
                "prunable": bool(info.kernels),
                "reason": info.reason,
                "kernels": info.kernel_paths(),
                "trainable": info.trainable,
            }
            for info in selection.describe(model)
        ],
        "groups": found,
        "groups_reason": reason,
    }


def _channels(model: Any, source: Any, found: list[dict[str, Any]] | None) -> bool:
    """Whether ``granularity: channel`` can prune ``model``: it has layers (a signature-only
    SavedModel has none to select), its layer graph is followed (``found``) and it can be
    rebuilt narrower from its layers' configs (a keras_hub task saves hyper-parameters
    instead, so "structured", the N:M and block patterns, applies to it but channel pruning
    does not)."""
    from prunecli.structured import rebuild

    if "layer_selection" not in source.supports:
        return False
    try:
        rebuild.check_rebuildable(model)
    except ConfigError:
        return False
    return found is not None


def _groups(model: Any, required: bool) -> tuple[list[dict[str, Any]] | None, str | None]:
    from prunecli.structured import graph, stage

    try:
        return [stage.describe(group) for group in graph.build(model).groups()], None
    except ConfigError as exc:
        if required:
            raise
        return None, str(exc)
    except Exception as exc:  # a graph it cannot follow must not break plain inspect
        if required:
            raise
        return None, f"the layer graph could not be followed ({type(exc).__name__}: {exc})"


def render(summary: dict[str, Any], console: Console) -> None:
    table = Table(
        title=f"{summary['path']} ({summary['format']}): {summary['params_total']:,} parameters, "
        f"{summary['params_nonzero']:,} non-zero",
        title_justify="left",
    )
    for name in ("layer", "type", "params", "sparsity", "prunable"):
        table.add_column(name, justify="right" if name in ("params", "sparsity") else "left")
    for row in summary["layers"]:
        sparsity = "" if row["sparsity"] is None else f"{100 * row['sparsity']:.2f}%"
        prunable = "yes" if row["prunable"] else f"no: {row['reason']}"
        table.add_row(row["path"], row["type"], f"{row['params']:,}", sparsity, prunable)
        for kernel in row["kernels"] if len(row["kernels"]) > 1 else ():
            table.add_row(f"  {kernel}", "", "", "", "")
    console.print(table)


def render_groups(summary: dict[str, Any], console: Console) -> None:
    """``inspect --groups``: one row per coupled group (members, channels, frozen or why)."""
    table = Table(title="channel groups (removed together)", title_justify="left")
    for name in ("group", "kind", "channels", "members", "prunable"):
        table.add_column(name, justify="right" if name in ("group", "channels") else "left")
    for row in summary["groups"] or []:
        prunable = f"no: {row['reason']}" if row["frozen"] else "yes"
        members = ", ".join(row["members"])
        table.add_row(str(row["id"]), row["kind"], f"{row['channels']:,}", members, prunable)
    console.print(table)
