"""The pipeline's hooks for ``prune.granularity: channel`` (each one call from pipeline).

``pruner`` makes the channel pruner, ``rebuilt`` swaps in the narrower model once the masks
are final (a no-op for every other granularity), ``layer_rows`` and ``group_rows`` add
what the report says about channels and groups.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from prunecli.config import Config
from prunecli.core import catalog
from prunecli.core.schedules import Schedule
from prunecli.errors import ConfigError
from prunecli.formats import savedmodel
from prunecli.pruning.selection import LayerInfo
from prunecli.structured import graph as coupling
from prunecli.structured import groups as groups_module
from prunecli.structured.pruner import ChannelPruner


def check(model: Any, prune: Any) -> None:
    """Under channel granularity, refuse a model without a layer graph (ConfigError)
    before anything reads its shapes; nothing for other granularities."""
    if prune.granularity == catalog.CHANNEL:
        coupling.inputs_of(model)


def pruner(
    model: Any,
    cfg: Config,
    schedule_for: Callable[[float], Schedule],
    gradients: Callable[[dict[str, Any]], dict[str, Any]] | None,
) -> ChannelPruner:
    """The channel pruner; ConfigError when there is nothing it could remove (a SavedModel
    signature has no layers to narrow; every group frozen), like pruning nothing at all
    under the other granularities, which is surely a mistake."""
    if savedmodel.signature_layer(model) is not None:
        raise ConfigError(
            "prune.granularity channel rebuilds the model's layers; a SavedModel read through "
            "its signature has none (use a .keras or .h5 model)"
        )
    found = ChannelPruner(model, cfg.prune, schedule_for, seed=cfg.seed, gradients=gradients)
    groups = found.first.groups
    if all(group.frozen for group in groups):
        reasons = sorted({reason for group in groups for reason in group.frozen})
        raise ConfigError(
            "prune.granularity channel: every channel group is frozen ("
            + "; ".join(reasons[:4])
            + ("; ..." if len(reasons) > 4 else "")
            + "); see prunecli inspect MODEL --groups"
        )
    return found


def rebuilt(pruning: Any, model: Any, layers: list[LayerInfo]) -> tuple[Any, list[LayerInfo]]:
    """``(model, layers)``, narrower when ``pruning`` is a channel pruner whose masks are
    final; unchanged otherwise (so the pipeline calls this whatever the granularity)."""
    if not isinstance(pruning, ChannelPruner):
        return model, layers
    narrow, selected = pruning.rebuilt(model)
    return narrow, selected if selected is not None else layers


def layer_rows(pruning: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Report rows with ``channels_before``, ``channels_after`` and ``group`` added (each
    null for a layer that makes no channels) under channel granularity."""
    if not isinstance(pruning, ChannelPruner):
        return rows
    columns = pruning.layer_columns()
    empty = dict.fromkeys(("channels_before", "channels_after", "group"))
    return [row | columns.get(row["path"], empty) for row in rows]


def group_rows(pruning: Any) -> list[dict[str, Any]] | None:
    """The report's ``groups`` (null for other granularities)."""
    if not isinstance(pruning, ChannelPruner):
        return None
    return [
        describe(group) | {"channels_after": len(pruning.plan.kept[group.id])}
        for group in pruning.plan.groups
    ]


# Why a group is kept whole that is no limitation of the pruner: the model's own contract.
_CONTRACT = ("model input", "model output")


def warnings(pruning: Any) -> list[str]:
    """What channel pruning keeps whole or only approximates, for the console and the
    report's ``warnings`` (none for other granularities; after the first plan, so that
    ``prune.layers`` exclusions count): the groups with weights frozen
    for a reason other than the model's inputs and outputs (most common reasons first),
    and LayerNormalizations over groups that may narrow (they then normalise over the
    surviving channels: the result is close to, not exactly, the original minus them).
    Example: ``36 of 61 channel groups kept whole (9,984 channels): LayerScale has no
    channel rule (the graph cannot follow it) x36; the report's groups say which``."""
    if not isinstance(pruning, ChannelPruner):
        return []
    graph = pruning.graph
    made = set(groups_module.producers(graph))
    found = [g for g in pruning.plan.groups if made & set(g.sources) and not _contract(g, graph)]
    frozen = [g for g in found if g.frozen]
    notes = []
    if frozen:
        reasons = Counter(reason.split(": ", 1)[-1] for g in frozen for reason in g.frozen)
        listed = "; ".join(f"{text} x{count}" for text, count in reasons.most_common(3))
        more = "; ..." if len(reasons) > 3 else ""
        notes.append(
            f"{len(frozen)} of {len(found)} channel groups kept whole "
            f"({sum(g.width for g in frozen):,} channels): {listed}{more}; the report's "
            "groups say which"
        )
    norms = _layer_norms(graph, [g for g in found if not g.frozen])
    if norms:
        notes.append(
            f"{len(norms)} LayerNormalization layers normalise channels that may be removed "
            f"({', '.join(norms[:3])}{', ...' if len(norms) > 3 else ''}): they then "
            "normalise over the surviving channels, so the pruned model is close to, not "
            "exactly, the original without them (fine-tuning closes the gap)"
        )
    return notes


def _contract(group: Any, graph: Any) -> bool:
    """Kept whole by the model's inputs and outputs alone: every reason is theirs, or is
    read by a layer making an output (logits -> softmax: the logits are the output's width)."""
    ends = tuple(f"read by {path}: " for path in graph.output_layers)
    return bool(group.frozen) and all(r.startswith(_CONTRACT + ends) for r in group.frozen)


def _layer_norms(graph: Any, open_groups: list[Any]) -> list[str]:
    """Paths of the LayerNormalizations that read a channel of an open group."""
    members = {m for g in open_groups for m in g.members}
    return [
        use.path
        for use in graph.uses.values()
        if type(use.layer).__name__ == "LayerNormalization" and use.path in members
    ]


def describe(group: Any) -> dict[str, Any]:
    """One group as JSON: what ``inspect --groups`` and the report list."""
    return {
        "id": group.id,
        "kind": group.kind,
        "channels": group.width,
        "members": list(group.members),
        "frozen": bool(group.frozen),
        "reason": "; ".join(group.frozen) or None,
    }
