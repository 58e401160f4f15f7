"""Preemption-safe fine-tuning: checkpoints, ``--resume``, and batches that do not depend on luck.

A checkpoint is one file, ``<folder>/checkpoint.npz`` (default folder: ``<output stem>.ckpt/``
beside the output), written under a temporary name and renamed over the previous one, so a
kill at any moment leaves either the old checkpoint or the new one, never half of one. It
holds every variable whose value the rest of the run depends on:

* the model's variables (kernels, biases, BatchNorm statistics, dropout seed states),
* the optimizer's (step counter, learning rate, Adam's moments),
* the pruner's mask variables and movement-pruning state, and which targets the masks were
  last computed for (so ``Pruner.update`` skips or recomputes exactly as it would have),
* the position ``(epoch, batch)`` of the next step, the report's mask updates so far, and a
  fingerprint (sha256 of the resolved config and of the input model's bytes): a checkpoint
  of another run is refused.

Why not ``model.fit(x, y, shuffle=True)``: Keras draws each epoch's order from a random
state that a restarted process cannot rewind. Here epoch ``e``'s order is fixed by
``(seed, e)`` alone (``data.Source.epochs``), so a resumed run feeds the same batches as an
uninterrupted one.
A run resumed mid-epoch (after ``checkpoint_steps`` or a signal) first trains the rest of
that epoch, then the following epochs: two ``fit`` calls whose callbacks see one run (the
batch numbers of the first are shifted to where the epoch stopped).

Why an ``.npz`` and not ``tf.train.Checkpoint``: the state is a fixed list of variables of
known shapes, checked one by one on restore, in one file whose rename is the commit; TF's
checkpoints are several files plus an index, and track Keras 3 variables only through
TensorFlow's object graph.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from prunecli import interrupts
from prunecli.config import Config, Finetune
from prunecli.data import Source
from prunecli.errors import ConfigError, OutputError
from prunecli.progress import Reporter

FILE = "checkpoint.npz"
FORMAT = 1  # bump when the stored state changes; an older checkpoint is then refused


class Preempted(KeyboardInterrupt):
    """Stopped by a signal after a checkpoint was written: exit 130, saying how to resume."""


@dataclass(frozen=True)
class Position:
    """The next step to run: ``batch`` of ``epoch`` (both from 0); ``(epochs, 0)`` is done."""

    epoch: int
    batch: int

    def step(self, spe: int) -> int:
        return self.epoch * spe + self.batch


def folder(checkpoint_dir: Path | None, output: Path) -> Path:
    """``finetune.checkpoint_dir``, or ``<output stem>.ckpt/`` beside the output model."""
    return checkpoint_dir or output.with_name(f"{output.stem}.ckpt")


def preflight(where: Path, *, resume: bool, force: bool) -> None:
    """No TensorFlow: ``--resume`` needs a checkpoint; a fresh run must not ignore one."""
    found = (where / FILE).is_file()
    if resume and not found:
        raise ConfigError(
            f"--resume: no checkpoint in {where} (run without --resume to start from the beginning)"
        )
    if not resume and found and not force:
        raise OutputError(
            f"{where}: holds the checkpoint of an interrupted run; pass --resume to continue it "
            "or --force to start over"
        )
    if where.exists() and not where.is_dir():
        raise OutputError(f"{where}: checkpoint folder is a file; set finetune.checkpoint_dir")


def fingerprint(config: Config, input_sha256: str) -> str:
    """What a checkpoint must match to be resumed: the whole resolved config and the input."""
    text = json.dumps(config.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(f"{FORMAT}\n{text}\n{input_sha256}".encode()).hexdigest()


def interrupted(where: Path, exc: KeyboardInterrupt) -> KeyboardInterrupt:
    """The interrupt to report: a ``Preempted`` naming the checkpoint if one is there."""
    if isinstance(exc, Preempted) or not (where / FILE).is_file():
        return exc
    return Preempted(_resume_hint(where))


def remove(where: Path) -> None:
    """A finished run needs no checkpoint: drop the file, and the folder if it is now empty."""
    (where / FILE).unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty (the user's own files) or already gone
        where.rmdir()


def _resume_hint(where: Path) -> str:
    return (
        f"interrupted; checkpoint saved in {where}, no other output was written "
        "(rerun the same command with --resume to continue)"
    )


@dataclass
class Tracker:
    """Checkpoints one fine-tuning run: where, how often, and whether to resume first."""

    where: Path
    fingerprint: str
    seed: int
    every: int | None = None  # also save every N optimizer steps
    resume: bool = False
    reporter: Reporter = field(default_factory=Reporter)

    def fit(
        self,
        model: Any,
        train: Source,
        targets: np.ndarray | None,
        settings: Finetune,
        hooks: Sequence[keras.callbacks.Callback],
        hook: Any,
    ) -> None:
        """``model.fit`` over seeded batches, from the checkpoint's position when resuming.

        ``hook`` is finetune's schedule hook: its pruner, result and current sparsity are
        part of the state. Call with the masks attached and the model compiled.
        """
        spe, epochs = hook.spe, settings.epochs
        model.optimizer.build(model.trainable_variables)  # its variables exist to be restored
        start = self._restore(model, hook) if self.resume else Position(0, 0)
        if not self.resume:
            remove(self.where)  # a stale one (--force): never resumed by mistake later
        saver = _Saver(self, model, hook, start.step(spe))

        def batches(start: Position, stop: int) -> Any:
            return train.epochs(
                settings.batch_size, seed=self.seed, first=start.epoch, stop=stop,
                skip=start.batch, targets=targets,
            )  # fmt: skip

        if start.batch == 0:
            if start.epoch < epochs:
                _fit(model, batches(start, epochs), [saver, *hooks], spe, start.epoch, epochs)
            return
        # Mid-epoch: the rest of this epoch, then the others; callbacks see one run.
        first = [_Shifted(cb, start.batch, epochs, spe, end=False) for cb in (saver, *hooks)]
        _fit(model, batches(start, start.epoch + 1), first, spe - start.batch, start.epoch,
             start.epoch + 1)  # fmt: skip
        if start.epoch + 1 < epochs:
            rest = [_Shifted(cb, 0, epochs, spe, begin=False) for cb in (saver, *hooks)]
            _fit(model, batches(Position(start.epoch + 1, 0), epochs), rest, spe,
                 start.epoch + 1, epochs)  # fmt: skip
        else:
            for callback in (saver, *hooks):
                callback.on_train_end()

    def save(self, model: Any, hook: Any, position: Position, reason: str) -> None:
        """Write the checkpoint atomically (temporary file in the folder, then rename)."""
        self.where.mkdir(parents=True, exist_ok=True)
        arrays = _state_arrays(model, hook.pruner)
        meta = {
            "format": FORMAT,
            "fingerprint": self.fingerprint,
            "epoch": position.epoch,
            "batch": position.batch,
            "applied": hook.pruner.state(),
            "current": hook.current,
            "updates": hook.result.updates,
        }
        arrays["meta"] = np.array(json.dumps(meta))
        fd, temp = tempfile.mkstemp(dir=self.where, prefix=".checkpoint.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, **arrays)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.where / FILE)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        self.reporter.note(
            "checkpoint", reason=reason, epoch=position.epoch,
            step=position.step(hook.spe), path=str(self.where),
        )  # fmt: skip

    def _restore(self, model: Any, hook: Any) -> Position:
        path = self.where / FILE
        try:
            with np.load(path, allow_pickle=False) as stored:
                arrays = {key: stored[key] for key in stored.files}
            meta = json.loads(str(arrays.pop("meta")))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            raise ConfigError(
                f"{path}: not a readable prunecli checkpoint (damaged, or not written by "
                f"prunecli); remove {self.where} to start over"
            ) from None
        if meta.get("format") != FORMAT or meta.get("fingerprint") != self.fingerprint:
            raise ConfigError(
                f"{path}: checkpoint of a different run (config or input model changed); "
                f"rerun with the same config and model, or remove {self.where} to start over"
            )
        _assign_state(arrays, model, hook.pruner, path)
        applied = meta["applied"]
        hook.pruner.restore(applied)
        hook.current = meta["current"]
        hook.result.updates[:] = meta["updates"]
        position = Position(meta["epoch"], meta["batch"])
        step = position.step(hook.spe)
        self.reporter.say(
            "resumed",
            f"resumed from {self.where} after {step} steps "
            f"(epoch {position.epoch + 1 if position.batch else position.epoch})",
            epoch=position.epoch, step=step, path=str(self.where),
        )  # fmt: skip
        return position


def _fit(
    model: Any,
    data: Any,
    callbacks: list[Any],
    steps: int,
    initial_epoch: int,
    epochs: int,
) -> None:
    model.fit(
        data,
        steps_per_epoch=steps,
        initial_epoch=initial_epoch,
        epochs=epochs,
        shuffle=False,  # the dataset orders each epoch itself, by (seed, epoch)
        callbacks=callbacks,
        verbose=0,
    )


def _state_arrays(model: Any, pruner: Any) -> dict[str, np.ndarray]:
    """Every variable of the state, by position (the same model and config give the same
    lists in the same order: the fingerprint guarantees both)."""
    arrays: dict[str, np.ndarray] = {}
    for name, variables in _state_variables(model, pruner).items():
        for index, variable in enumerate(variables):
            arrays[f"{name}/{index}"] = np.asarray(keras.ops.convert_to_numpy(variable))
    return arrays


def _state_variables(model: Any, pruner: Any) -> dict[str, list[Any]]:
    movement = [
        variable
        for state in pruner.movement.values()
        for variable in (state.score, state.previous, state.shadow)
    ]
    return {
        "model": list(model.variables),
        "optimizer": list(model.optimizer.variables),
        "masks": list(pruner.masks.values()),
        "movement": movement,
    }


def _assign_state(arrays: dict[str, np.ndarray], model: Any, pruner: Any, path: Path) -> None:
    groups = _state_variables(model, pruner)
    expected = {f"{name}/{i}" for name, variables in groups.items() for i in range(len(variables))}
    if expected != set(arrays):
        raise ConfigError(f"{path}: checkpoint does not match this model's variables")
    for name, variables in groups.items():
        for index, variable in enumerate(variables):
            value = arrays[f"{name}/{index}"]
            if tuple(value.shape) != tuple(variable.shape):
                raise ConfigError(
                    f"{path}: {name} variable {index} ({variable.path}) has shape "
                    f"{tuple(value.shape)} in the checkpoint, {tuple(variable.shape)} here"
                )
            variable.assign(value)


class _Saver(keras.callbacks.Callback):
    """Saves at each epoch end, every ``every`` steps, and when a signal is waiting.

    Listed before the other callbacks: on a signal it saves before the next step (nothing
    of it has run yet) and raises ``Preempted`` before ``pipeline._StopOnSignal`` would
    raise a plain interrupt.
    """

    def __init__(self, tracker: Tracker, model: Any, hook: Any, last_saved: int) -> None:
        super().__init__()
        self.tracker, self.state_model, self.hook = tracker, model, hook
        self.epoch = 0
        self.last_saved = last_saved

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        position = Position(self.epoch, batch)
        step = position.step(self.hook.spe)
        if interrupts.requested():
            self._save(position, "signal")
            raise Preempted(_resume_hint(self.tracker.where))
        every = self.tracker.every
        if every and step % every == 0 and step != self.last_saved:
            self._save(position, "steps")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._save(Position(epoch + 1, 0), "epoch")

    def _save(self, position: Position, reason: str) -> None:
        self.tracker.save(self.state_model, self.hook, position, reason)
        self.last_saved = position.step(self.hook.spe)


class _Shifted(keras.callbacks.Callback):
    """Forwards to ``inner`` as if the ``fit`` call were part of one ``epochs``-long run:
    batch numbers shifted by ``offset``, ``params`` of the whole run, and train begin/end
    passed on only by the first/last of the calls."""

    def __init__(
        self, inner: Any, offset: int, epochs: int, spe: int, begin: bool = True, end: bool = True
    ) -> None:
        super().__init__()
        self.inner, self.offset, self.whole = inner, offset, {"epochs": epochs, "steps": spe}
        self.begin, self.end = begin, end

    def set_model(self, model: Any) -> None:
        super().set_model(model)
        self.inner.set_model(model)

    def set_params(self, params: dict) -> None:
        super().set_params(params)
        self.inner.set_params({**params, **self.whole})

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.begin:
            self.inner.on_train_begin(logs)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.end:
            self.inner.on_train_end(logs)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.inner.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.inner.on_epoch_end(epoch, logs)

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self.inner.on_train_batch_begin(batch + self.offset, logs)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.inner.on_train_batch_end(batch + self.offset, logs)
