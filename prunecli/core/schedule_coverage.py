"""How much of fine-tuning a schedule leaves at its final sparsity. Pure.

Fine-tuning at the final sparsity is what lets the network recover from the last mask
update; a polynomial schedule whose ``end_epoch`` equals ``finetune.epochs`` (``--epochs 1``
with the default ``end_epoch: 1``) reaches its target at the very last step and leaves no
training there. ``warning`` says so when fewer than ``MIN_FRACTION`` of the steps remain.
"""

from __future__ import annotations

from prunecli.core.schedules import Schedule

MIN_FRACTION = 0.1


def first_final_step(schedule: Schedule, total: int) -> int:
    """The first step (0 .. ``total``) at which the target is the final one.

    Every schedule's target never falls as steps go on, so a binary search finds it in
    ``log2(total)`` questions even for millions of steps. Example: polynomial from step 0 to
    100 over 120 steps -> 100 (20 steps, 17%, at the final sparsity)."""
    low, high = 0, total
    while low < high:
        middle = (low + high) // 2
        if schedule.sparsity_at(middle) >= schedule.final - 1e-12:
            high = middle
        else:
            low = middle + 1
    return low


def warning(schedule: Schedule, total: int) -> str | None:
    """A one-line warning when fewer than 10% of the ``total`` fine-tuning steps run at the
    final sparsity (None otherwise, and when nothing is fine-tuned)."""
    if total <= 0 or schedule.final <= 0:
        return None
    left = total - first_final_step(schedule, total)
    if left >= MIN_FRACTION * total:
        return None
    return (
        f"the schedule reaches its final sparsity at step {total - left} of {total}: "
        f"only {left} fine-tuning steps ({100 * left / total:.0f}%) run at the final "
        f"sparsity; raise finetune.epochs or lower prune.schedule.end_epoch so that at "
        f"least {100 * MIN_FRACTION:.0f}% do"
    )
