"""Deployable outputs: SavedModel folders and TFLite files, and what each one measures.

``output.path``'s suffix picks the main artifact's format (``.keras``, ``.h5``, ``.tflite``;
no suffix, or a trailing ``/``, is a SavedModel folder) and ``output.export`` adds more
beside it, named from the main one's stem: ``pruned.keras`` with ``export: [savedmodel,
tflite]`` also writes ``pruned.savedmodel/`` and ``pruned.tflite``.

A deployable artifact (SavedModel, TFLite) is measured by running *it*, not the Keras
model it came from: a TFLite file in the LiteRT interpreter, a SavedModel through its
``serving_default`` signature. Every TFLite file is run once before it is kept: with TF
2.21, sparse storage combined with dynamic-range or int8 quantisation makes XNNPack (LiteRT's
default CPU delegate) fail to prepare ("failed to delegate FULLY_CONNECTED node"); such a
model is converted again dense, keeping the quantisation, and the report says so.

Nothing here imports TensorFlow at module level: ``plan`` runs in preflight.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from prunecli import data
from prunecli.config import TFLite
from prunecli.errors import OutputError, first_line
from prunecli.formats import runners, staging
from prunecli.formats.base import InputFormat
from prunecli.reporting import measure

# Suffix -> format of the main output; "" (no suffix) is a SavedModel folder.
SUFFIXES = {".keras": "keras", ".h5": "h5", ".hdf5": "h5", ".tflite": "tflite", "": "savedmodel"}
# Format -> how an ``output.export`` extra is named from the main output's stem.
EXTRA_SUFFIX = {"savedmodel": ".savedmodel", "tflite": ".tflite", "keras": ".keras", "h5": ".h5"}
DEPLOYABLE = ("savedmodel", "tflite")  # measured by running the artifact itself

CALIBRATION_SAMPLES = 100  # int8: representative batches of one, from data.train
# int8 calibration inputs: one array, or a multi-input model's dict of arrays by input name
Calibration = np.ndarray | dict[str, np.ndarray] | None


@dataclass(frozen=True)
class Artifact:
    """One file or folder to write: ``format`` is keras, h5, savedmodel or tflite."""

    format: str
    path: Path

    @property
    def folder(self) -> bool:
        return self.format == "savedmodel"


def plan(main: Path, folder: bool, extras: list[str]) -> list[Artifact]:
    """The artifacts of a run, main first. An extra in the main one's format is the main
    one (``pruned.keras`` + ``export: [keras]`` writes one file), and repeats are dropped.

    >>> [a.path.name for a in plan(Path("m.keras"), False, ["tflite", "savedmodel"])]
    ['m.keras', 'm.tflite', 'm.savedmodel']
    """
    fmt = "savedmodel" if folder else SUFFIXES.get(main.suffix.lower())
    if fmt is None:
        raise OutputError(
            f"{main}: unsupported output format {main.suffix}; use .keras, .h5, .tflite, "
            "or a folder path (no suffix, or ending in /) for a SavedModel"
        )
    if fmt in ("keras", "h5") and main.suffix != main.suffix.lower():
        raise OutputError(
            f"{main}: write the suffix in lower case ({main.suffix.lower()}); Keras saves "
            "and loads a model only under that name"
        )
    stem = main.name if fmt == "savedmodel" else main.stem
    found = [Artifact(fmt, main)]
    for extra in dict.fromkeys(extras):
        if extra != fmt:
            found.append(Artifact(extra, main.with_name(stem + EXTRA_SUFFIX[extra])))
    return found


def write(
    model: Any,
    source: InputFormat,
    artifact: Artifact,
    path: Path,
    settings: TFLite,
    calibration: Calibration,
) -> str | None:
    """Write ``model`` (read from an input of kind ``source``) as ``artifact.format`` at
    ``path`` (a staged temporary name); returns a note when the file had to differ from
    what was asked (see ``convert_tflite``). Every SavedModel is made by the input's
    adapter (TFLite files are converted from one)."""
    from prunecli.formats import model_io

    if artifact.format == "savedmodel":
        source.export_savedmodel(model, path)
        return None
    if artifact.format == "tflite":
        flat, note = convert_tflite(model, source, settings, calibration, artifact.path)
        path.write_bytes(flat)
        return note
    model_io.save(model, path)
    return None


def convert_tflite(
    model: Any,
    source: InputFormat,
    settings: TFLite,
    calibration: Calibration,
    where: Path,
) -> tuple[bytes, str | None]:
    """(flatbuffer, note): the model converted as ``settings`` asks, checked to run in LiteRT
    with its default delegate; if sparse storage stops it running, converted dense instead
    (same quantisation) and the note says why. Raises OutputError if neither runs."""
    with tempfile.TemporaryDirectory(prefix="prunecli-") as folder:
        exported = Path(folder) / "savedmodel"
        source.export_savedmodel(model, exported)
        flat = _convert(exported, settings.sparse, settings.quantize, calibration)
        problem = _run_problem(flat)
        if problem is None and settings.sparse and settings.quantize != "none":
            return _smaller_of(flat, exported, settings, calibration)
        if problem is None:
            return flat, None
        if settings.sparse:
            dense = _convert(exported, False, settings.quantize, calibration)
            if _run_problem(dense) is None:
                return dense, (
                    f"sparse storage with quantize {settings.quantize} does not run in LiteRT's "
                    f"default delegate ({problem}); written with dense weights instead"
                )
    raise OutputError(f"{where}: the converted TFLite model does not run in LiteRT ({problem})")


def _smaller_of(
    sparse: bytes, source: Path, settings: TFLite, calibration: Calibration
) -> tuple[bytes, str | None]:
    """Quantised weights are one byte each, so sparse (CSR) storage, which adds an index per
    kept weight, can come out larger than dense: then the dense file is written."""
    dense = _convert(source, False, settings.quantize, calibration)
    if len(dense) >= len(sparse) or _run_problem(dense) is not None:
        return sparse, None
    return dense, (
        f"sparse storage with quantize {settings.quantize} came out larger than dense "
        f"({len(sparse):,} vs {len(dense):,} bytes: its indices cost more than the zeros "
        "save); written with dense weights instead"
    )


def larger_note(
    entry: dict[str, Any], before: dict[str, Any] | None, settings: TFLite
) -> str | None:
    """When a written artifact is larger than the input exported the same way, why."""
    if not before or entry["size_bytes"] <= before["size_bytes"]:
        return None
    why = (
        "sparse storage adds index arrays, which at this sparsity cost more than the zeros save"
        if entry["format"] == "tflite" and settings.sparse
        else "pruning zeroes weights without removing them, so only format overhead differs"
    )
    return (
        f"{entry['size_bytes']:,} bytes, larger than the input exported the same way "
        f"({before['size_bytes']:,} bytes): {why}"
    )


def _convert(source: Path, sparse: bool, quantize: str, calibration: Calibration) -> bytes:
    """One TFLiteConverter run. int8 keeps float32 inputs and outputs (quantize/dequantize
    ops at the edges), so the file is a drop-in for the float model."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(source))
    optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY] if sparse else []
    if quantize != "none":
        optimizations.append(tf.lite.Optimize.DEFAULT)
    converter.optimizations = optimizations
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        converter.representative_dataset = _representative(calibration)
    try:
        return converter.convert()
    except Exception as exc:
        raise OutputError(f"TFLite conversion failed: {first_line(exc)}") from exc


def _representative(calibration: Calibration) -> Callable[[], Iterator[Any]]:
    if calibration is None or not len(calibration):
        raise OutputError("output.tflite.quantize int8 needs training data (data.train)")
    if isinstance(calibration, dict):  # a multi-input model: each input by name
        return runners.representative(calibration, CALIBRATION_SAMPLES)
    samples = np.asarray(calibration[:CALIBRATION_SAMPLES])
    if samples.dtype.kind not in "iu":  # each input in its own dtype: int32 token ids stay ints
        samples = samples.astype(np.float32)

    def batches() -> Iterator[list[np.ndarray]]:
        for sample in samples:
            yield [sample[None]]

    return batches


def _run_problem(flat: bytes) -> str | None:
    """None if the model allocates and runs one zero sample in LiteRT; else why not."""
    try:
        interpreter = measure.litert_interpreter(flat)
        if len(interpreter.get_input_details()) > 1:
            runners.zeros_run(interpreter)
            return None
        detail = interpreter.get_input_details()[0]
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        interpreter.invoke()
    except Exception as exc:  # LiteRT raises RuntimeError/ValueError with the C++ message
        return first_line(exc)
    return None


def measure_input(
    model: Any,
    source: InputFormat,
    artifacts: tuple[Artifact, ...],
    settings: TFLite,
    splits: data.Splits,
    task: Any,
) -> dict[str, dict[str, Any]]:
    """The unpruned model exported the same way as each deployable artifact and measured:
    the ``before`` of each ``exports`` entry (keyed by format). A multi-input model's
    artifacts are fed every input by name (``runners``)."""
    samples, scored = _eval_source(splits, task)
    found: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="prunecli-") as folder:
        for artifact in artifacts:
            if artifact.format in DEPLOYABLE:
                path = Path(folder) / f"before{EXTRA_SUFFIX[artifact.format]}"
                write(model, source, artifact, path, settings, _calibration(splits))
                found[artifact.format] = measure.artifact(artifact.format, path, samples, scored)
    return found


def stage_all(
    model: Any,
    source: InputFormat,
    artifacts: tuple[Artifact, ...],
    stage: staging.Staging,
    settings: TFLite,
    splits: data.Splits,
    task: Any,
    before: dict[str, dict[str, Any]],
) -> tuple[Path, list[dict[str, Any]]]:
    """Write every artifact under a staged name (renamed with the reports at commit) and
    measure the deployable ones: (the main artifact's staged path, the report's
    ``exports``, one entry per SavedModel / TFLite artifact)."""
    samples, scored = _eval_source(splits, task)
    entries: list[dict[str, Any]] = []
    staged_paths = []
    for artifact in artifacts:
        staged = (stage.temp_dir_for if artifact.folder else stage.temp_for)(artifact.path)
        note = write(model, source, artifact, staged, settings, _calibration(splits))
        staged_paths.append(staged)
        if artifact.format in DEPLOYABLE:
            entries.append(
                {"format": artifact.format, "path": str(artifact.path)}
                | measure.artifact(artifact.format, staged, samples, scored)
                | {"before": before.get(artifact.format), "note": note}
            )
            larger = larger_note(entries[-1], before.get(artifact.format), settings)
            if larger:
                entries[-1]["note"] = "; ".join(filter(None, (note, larger)))
    return staged_paths[0], entries


def _eval_source(splits: data.Splits, task: Any) -> tuple[data.Source | None, Any]:
    """Artifacts are scored on the validation data (the task then passes through); without
    it, training inputs still time them (accuracy is then null)."""
    if splits.validation is not None:
        return splits.validation, task
    return splits.train, None


def _calibration(splits: data.Splits) -> Calibration:
    """int8: the first CALIBRATION_SAMPLES training inputs, in file order (a dict of them
    by input name for a multi-input model)."""
    if splits.train is None or not len(splits.train):
        return None
    first = splits.train.dataset(CALIBRATION_SAMPLES, cache=False).take(1)
    return next(data.numpy_batch(x) for x, _ in first)
