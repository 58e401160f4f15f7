"""training/finetune.py: the product's own fine-tuning loop holds the masks while a gradual
schedule raises them, and starts a new ``steps_per_execution`` call where it must."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from helpers import (
    build_cnn,
    mask_checker,
    scaled_images,
    seeded,
)

from prunecli import data
from prunecli.config import Finetune, Prune
from prunecli.core import masking, schedules
from prunecli.progress import Reporter
from prunecli.pruning import selection
from prunecli.pruning.pruner import Pruner
from prunecli.training import finetune

# --- finetune.run: the product's own loop --------------------------------------------------


def test_finetune_run_holds_masks_while_a_polynomial_schedule_raises_them():
    model = seeded(build_cnn)
    prune = Prune(sparsity=0.75)
    x, y = scaled_images(48)
    spe = finetune.steps_per_epoch(len(x), 8)  # 6
    assert spe == 6
    schedule_for = lambda final: schedules.build(  # noqa: E731
        "polynomial",
        final,
        schedules.Plan(spe, 2 * spe, start_epoch=0.5, end_epoch=1.5, power=3, frequency=2),
    )
    pruner = Pruner(selection.select(model, prune), prune, schedule_for)
    checker = mask_checker(pruner)  # runs after finetune's own schedule hook
    settings = Finetune(epochs=2, batch_size=8, learning_rate=0.05, optimizer="sgd", momentum=0.9)
    result = finetune.run(
        model,
        pruner,
        data.from_arrays(x, y),
        settings,
        {"loss": keras.losses.SparseCategoricalCrossentropy()},
        Reporter(),
        callbacks=[checker],
    )
    assert checker.batches == 12
    assert checker.violations == []
    # window steps 3..9, every 2 steps from 3 and at the end: updates before steps 3, 5, 7, 9,
    # then finish() after the last step (12)
    assert [u["step"] for u in result.updates] == [3, 5, 7, 9, 12]
    n = {"conv/kernel": 36, "hidden/kernel": 2304, "out/kernel": 48}
    # step 5: progress 2/6, s = 0.75 - 0.75 * (2/3)**3
    s5 = 0.75 - 0.75 * (2 / 3) ** 3
    assert checker.masked_counts[5] == {k: round(s5 * v) for k, v in n.items()}
    assert checker.masked_counts[-1] == {k: round(0.75 * v) for k, v in n.items()}
    assert result.updates[-1]["sparsity"] == pytest.approx(
        sum(round(0.75 * v) for v in n.values()) / sum(n.values())
    )
    assert (result.epochs, result.steps) == (2, 12)
    for key, variable in pruner.kernels.items():
        assert variable.constraint is None, key
        mask = np.array(pruner.masks[key])
        assert masking.sparsity(mask) == pytest.approx(round(0.75 * n[key]) / n[key])
        np.testing.assert_array_equal(np.array(variable)[mask == 0], 0.0)


@pytest.mark.parametrize(
    ("kind", "spe", "epochs", "every", "setting", "expected"),
    [
        ("one_shot", 48, 2, None, "auto", 24),  # largest divisor of 48 up to 32
        ("one_shot", 45, 2, 10, "auto", 5),  # checkpoints every 10 steps: gcd(45, 10)
        ("polynomial", 45, 3, None, "auto", 5),  # updates every 10 steps from step 0
        ("polynomial", 45, 3, None, 3, 1),  # a cap of 3 that does not divide 5
        ("one_shot", 41, 2, None, "auto", 1),  # a prime epoch: one step a call
    ],
)
def test_steps_per_execution_starts_a_call_at_every_update_checkpoint_and_epoch(
    kind, spe, epochs, every, setting, expected
):
    prune = Prune(sparsity=0.5)
    plan = schedules.Plan(spe, epochs * spe, end_epoch=2, frequency=10)
    pruner = Pruner(
        selection.select(seeded(build_cnn), prune), prune,
        lambda final: schedules.build(kind, final, plan),
    )  # fmt: skip
    steps = finetune.steps_per_execution(setting, spe, epochs * spe, pruner, every)
    assert steps == expected
    assert finetune.steps_per_execution(setting, spe, epochs * spe, pruner, every, True) == 1
    updates = [s for s in range(epochs * spe) if pruner.updates_at(s)]
    assert all(s % steps == 0 for s in [*updates, spe, every or 0])
