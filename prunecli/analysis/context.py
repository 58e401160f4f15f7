"""What a scan needs, from a loaded model and a config: the selected layers, a ``Masker``
over their kernels and an ``Evaluator`` over the fixed validation subset.

``build`` is shared by ``prunecli analyze`` and by ``prune.sparsity: auto`` (which already
holds the data, the task and the loss); ``prepare`` does the loading for ``analyze``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from prunecli import data
from prunecli.analysis.channels import GroupMasker
from prunecli.analysis.scan import Evaluator, Masker
from prunecli.config import Config
from prunecli.core import catalog
from prunecli.errors import ConfigError
from prunecli.formats.base import InputFormat
from prunecli.progress import Reporter
from prunecli.pruning import selection
from prunecli.pruning.selection import LayerInfo
from prunecli.reporting import evaluate


@dataclass(frozen=True)
class Scope:
    layers: list[LayerInfo]
    masker: Masker  # or a channels.GroupMasker under granularity channel
    evaluator: Evaluator
    samples: int  # validation samples evaluated per point


def build(
    model: Any,
    layers: list[LayerInfo],
    cfg: Config,
    splits: data.Splits,
    task: evaluate.Task,
    loss: Any,
) -> Scope:
    """Masker and evaluator for ``layers`` (already selected) on ``analyze.samples`` of the
    validation split. Taylor scores take their gradients once, from the training data."""
    if splits.validation is None:
        raise ConfigError("a sensitivity scan needs validation data (data.validation_split is 0)")
    chosen = subset(splits.validation, cfg.analyze.samples, cfg.seed)
    x, y = data.materialize(chosen)
    source = _gradient_source(model, cfg, splits, loss)
    if cfg.prune.granularity == catalog.CHANNEL:  # rows are channel groups
        masker: Any = GroupMasker(model, cfg.prune, seed=cfg.seed, gradients=source)
        return Scope(layers, masker, Evaluator(model, x, y, task, loss), len(y))
    gradients = None
    if source is not None:
        kernels = {
            f"{info.path}/{attr}": variable
            for info in layers
            if info.selected
            for attr, variable in info.kernels.items()
        }
        gradients = source(kernels)
    masker = Masker(layers, cfg.prune, seed=cfg.seed, gradients=gradients)
    return Scope(layers, masker, Evaluator(model, x, y, task, loss), len(y))


def _gradient_source(model: Any, cfg: Config, splits: data.Splits, loss: Any) -> Any:
    """Taylor scores: a function taking gradients of the training loss (None otherwise)."""
    if not cfg.prune.needs.gradients:
        return None
    if splits.train is None:
        raise ConfigError("prune.method taylor scores weights by gradients: set data.train")
    from prunecli.training import finetune

    return finetune.gradient_source(
        model, splits.train, loss, cfg.prune.score_batches, cfg.finetune.batch_size, cfg.seed
    )


def prepare(model: Any, source: InputFormat, cfg: Config, reporter: Reporter) -> Scope:
    """``prunecli analyze``: data, task and loss for ``model`` (``source``: its input
    kind's adapter), then ``build``. The loss is the one a prune run evaluates with."""
    from prunecli.formats import compiling, model_io

    splits, _ = data.for_model(cfg.data, model, cfg.seed)  # as a prune run reads them
    # The task comes from the training labels, as in a prune run: a small held-out split
    # may hold one class only ("only one class in the labels" blamed on the whole file).
    labelled = splits.train or splits.validation
    if splits.validation is None or labelled is None:
        raise ConfigError("analyze needs validation data (data.validation_split is 0)")
    where = cfg.data.train or cfg.data.validation
    task = evaluate.infer_task(model, labelled, where, source.output_activation(model))
    layers = selection.select(model, cfg.prune)
    args = compiling.training_args(
        model_io.compile_config(model), task.compile_args(), cfg.finetune
    )
    scope = build(model, layers, cfg, splits, task, args["loss"])
    reporter.say(
        "message",
        f"scanning {len(scope.masker.layers)} {_rows(cfg)} x {len(cfg.analyze.levels)} levels "
        f"on {scope.samples:,} validation samples ({task.kind})",
    )
    return scope


def _rows(cfg: Config) -> str:
    return "channel groups" if cfg.prune.granularity == catalog.CHANNEL else "layers"


def subset(source: data.Source, samples: int | None, seed: int) -> data.Source:
    """``analyze.samples`` validation samples, a seeded choice kept in file order (class
    folders are sorted: the first N alone could be one class); all when None."""
    if samples is None or samples >= len(source):
        return source
    chosen = np.sort(np.random.default_rng(seed).choice(len(source), samples, replace=False))
    return source.subset(chosen, source.name)
