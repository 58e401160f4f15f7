"""Fine-tuning that diverges stops with an error instead of saving a NaN model.

A learning rate too high for the model (or data with extreme values) drives the loss to
inf, then NaN; every weight follows, and a mask multiplies a pruned NaN weight to NaN,
not 0. Keras's own ``TerminateOnNaN`` only stops training, and prunecli would then save
the NaN model with exit 0. ``FiniteLoss`` checks each epoch's mean loss (one number Keras
already computed: no extra device sync per step) and raises ``DataError``::

    fine-tuning diverged: the loss became nan in epoch 2 (steps 4 to 6); nothing was
    written. Lower finetune.learning_rate (now 10.0)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import keras

from prunecli.config import Finetune
from prunecli.errors import DataError
from prunecli.training import checkpoints


class FiniteLoss(keras.callbacks.Callback):
    """Raise ``DataError`` at the end of the first epoch whose loss is not finite, after
    removing the checkpoint of that epoch (a resume would only diverge again)."""

    def __init__(self, settings: Finetune, checkpoint: Path) -> None:
        super().__init__()
        self.settings = settings
        self.checkpoint = checkpoint

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(loss)):
            return
        checkpoints.remove(self.checkpoint)
        spe = int(self.params.get("steps") or 1)  # steps per epoch, set by model.fit
        first, last = epoch * spe + 1, (epoch + 1) * spe
        raise DataError(
            f"fine-tuning diverged: the loss became {float(loss)} in epoch {epoch + 1} "
            f"(steps {first} to {last}); nothing was written. Lower finetune.learning_rate "
            f"(now {self.settings.learning_rate:g}) or check the data for extreme values"
        )
