"""The names config accepts for each registry, and what each entry needs to run.

The implementations live beside their kind (``scoring.REGISTRY``, ``schedules.BUILDERS``,
``finetune.OPTIMIZERS``, ``distribute.STRATEGIES``); this module holds only their names and
needs, in pure Python, so that ``config`` (and ``prunecli validate``) can check a choice
without importing numpy or TensorFlow. ``tests/core/test_catalog.py`` keeps each registry's
keys equal to its catalog entry. Adding a method: a score function and its
``scoring.REGISTRY`` entry, its ``METHODS`` entry here saying what it needs, one test.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Needs:
    """What a score needs besides the weights, so callers never branch on its name.

    ``gradients``: |dL/dw| over a few training batches (taylor), so training data.
    ``training``: statistics only fine-tuning produces (movement), so a gradual schedule
    and fine-tuning epochs.
    """

    gradients: bool = False
    training: bool = False


METHODS: dict[str, Needs] = {
    "magnitude": Needs(),
    "random": Needs(),
    "taylor": Needs(gradients=True),
    "lamp": Needs(),
    "movement": Needs(training=True),
}

# prune.granularity channel (structured pruning, ``prunecli.structured``) scores whole
# channels: its own names (``magnitude`` = l1 there); ``structured.groups.REDUCERS`` has
# exactly these keys.
CHANNEL = "channel"
CHANNEL_METHODS: dict[str, Needs] = {
    "l1": Needs(),
    "l2": Needs(),
    "bn_scale": Needs(),
    "taylor": Needs(gradients=True),
    "fpgm": Needs(),
    "random": Needs(),
    "magnitude": Needs(),
    "lamp": Needs(),  # l2 scores, LAMP-normalised within each group (for scope: global)
}
# Every name prune.method accepts (weight scores first, then the channel-only ones).
ALL_METHODS = tuple(dict.fromkeys([*METHODS, *CHANNEL_METHODS]))

# Schedules that raise sparsity step by step during fine-tuning (the rest prune at once).
GRADUAL_SCHEDULES = ("polynomial", "iterative")
SCHEDULES = ("one_shot", "constant", *GRADUAL_SCHEDULES)
OPTIMIZERS = ("adam", "sgd", "rmsprop")
STRATEGIES = ("auto", "none", "mirrored", "multi_worker")
