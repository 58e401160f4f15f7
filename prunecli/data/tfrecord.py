"""TFRecord shards of ``tf.train.Example`` -> a streamed ``Source``.

``data.tfrecord.features`` names the features: the label is ``data.label_column`` (one
int64 or float32 value), the one other feature is the model's input. A ``float32`` or
``int64`` feature is a flat list of its shape's values (``[28, 28, 1]``: 784 floats),
multiplied by ``data.rescale`` when that is set (by default taken as is); a
``string`` feature holds an encoded PNG/JPEG image decoded to its shape like an image
folder's files. The spec is checked on the first record, feature by feature, so a mismatch
is one ``DataError`` naming the feature; the labels are read in one pass (parsing only the
label), the inputs when iterated.
"""

from __future__ import annotations

import glob
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from prunecli.config import Data, Feature
from prunecli.data import checks, images
from prunecli.data.inputs import InputSpec
from prunecli.data.source import Source, labels_of, pick_rows
from prunecli.errors import DataError, first_line

_LABEL_BATCH = 8192


def read(pattern: Path, settings: Data, specs: tuple[InputSpec, ...] = ()) -> Source:
    """``tf.train.Example`` shards matching a glob: the label feature is
    ``data.label_column``, the one other feature is the model's input; for a model with
    several inputs (``specs``), one feature per input, named after it, cast to its dtype."""
    files = sorted(glob.glob(str(pattern)))
    if not files:
        raise DataError(f"{pattern}: no TFRecord files match")
    features = settings.tfrecord.features
    label_name = settings.label_column
    if label_name not in features:
        raise DataError(
            f"data.tfrecord.features: no label feature {label_name!r} "
            f"(features: {', '.join(features)}); add it or set data.label_column"
        )
    inputs = [name for name in features if name != label_name]
    if len(specs) > 1:
        return _read_multi(files, settings, specs)
    if len(inputs) != 1:
        raise DataError(
            f"data.tfrecord.features: expected one input feature besides the label "
            f"{label_name!r}, got {len(inputs)} ({', '.join(inputs) or 'none'})"
        )
    name, label = inputs[0], features[label_name]
    if label.dtype == "string" or math.prod(label.shape) != 1:
        raise DataError(
            f"data.tfrecord.features.{label_name}: the label must be one int64 or float32 "
            f"value, got dtype {label.dtype} shape {label.shape}"
        )
    parse_x = _feature_parser(name, features[name], settings)
    _check_first_record(files[0], {name: parse_x, label_name: _label_parser(label_name, label)})
    labels = _tfrecord_labels(files, label_name, label, (name, features[name]))
    shape = tuple(features[name].shape)

    def keys(rows: np.ndarray) -> Any:
        import tensorflow as tf

        return pick_rows(tf.data.TFRecordDataset(files), rows, len(labels))

    return Source(
        "", labels, shape, rows=np.arange(len(labels)), keys=keys, decode=parse_x,
        random_access=False,
    )  # fmt: skip


def _read_multi(files: list[str], settings: Data, specs: tuple[InputSpec, ...]) -> Source:
    """Features mapped to the model's inputs by name: each decoded sample is a dict."""
    features, label_name = settings.tfrecord.features, settings.label_column
    missing = [spec.name for spec in specs if spec.name not in features]
    if missing:
        raise DataError(
            f"data.tfrecord.features: no feature for model input(s) {', '.join(missing)}; "
            f"a multi-input model needs one feature per input, named after it "
            f"(features: {', '.join(features)})"
        )
    parsers = {
        spec.name: _cast(_feature_parser(spec.name, features[spec.name], settings), spec.dtype)
        for spec in specs
    }
    label = features[label_name]
    _check_first_record(files[0], parsers | {label_name: _label_parser(label_name, label)})
    labels = _tfrecord_labels(files, label_name, label, (specs[0].name, features[specs[0].name]))

    def keys(rows: np.ndarray) -> Any:
        import tensorflow as tf

        return pick_rows(tf.data.TFRecordDataset(files), rows, len(labels))

    def decode(record: Any) -> Any:
        return {name: parse(record) for name, parse in parsers.items()}

    return Source(
        "", labels, (), rows=np.arange(len(labels)), keys=keys, decode=decode,
        random_access=False,
    )  # fmt: skip


def _cast(parse: Callable[[Any], Any], dtype: str) -> Callable[[Any], Any]:
    def cast(record: Any) -> Any:
        import tensorflow as tf

        return tf.cast(parse(record), dtype)

    return cast


def _feature_parser(name: str, feature: Feature, settings: Data) -> Callable[[Any], Any]:
    """serialized Example -> the feature as a float32 tensor of ``feature.shape``."""
    shape = tuple(feature.shape)
    if feature.dtype == "string":
        if len(shape) != 3 or shape[-1] not in images.CHANNEL_MODES:
            raise DataError(
                f"data.tfrecord.features.{name}: a string (encoded image) feature needs shape "
                f"[height, width, channels] with 1, 3 or 4 channels, got {list(shape)}"
            )
        scale = 1.0 / 255.0 if settings.rescale in (None, "auto") else settings.rescale

        def parse_image(record: Any) -> Any:
            import tensorflow as tf

            raw = tf.io.parse_single_example(record, {name: tf.io.FixedLenFeature([], tf.string)})[
                name
            ]
            return images.decode_image(raw, shape[:2], shape[2], scale)

        return parse_image
    if not shape:
        raise DataError(
            f"data.tfrecord.features.{name}: a {feature.dtype} feature needs its shape "
            "(e.g. [28, 28, 1]); got none"
        )

    # A list of values is taken as is unless the user set data.rescale to a number: then it
    # is applied, like an image's pixels (uint8 pixels stored as int64, 1/255: [0, 1]).
    chosen = "rescale" in settings.model_fields_set and settings.rescale not in (None, "auto")
    scale = settings.rescale if chosen else None

    def parse_values(record: Any) -> Any:
        import tensorflow as tf

        spec = tf.io.FixedLenFeature([math.prod(shape)], getattr(tf, feature.dtype))
        values = tf.cast(tf.io.parse_single_example(record, {name: spec})[name], tf.float32)
        if scale is not None:
            values = values * scale
        return tf.reshape(values, shape)

    return parse_values


def _label_parser(name: str, label: Feature) -> Callable[[Any], Any]:
    def parse_label(record: Any) -> Any:
        import tensorflow as tf

        spec = {name: tf.io.FixedLenFeature([1], getattr(tf, label.dtype))}
        return tf.io.parse_single_example(record, spec)[name]

    return parse_label


def _check_first_record(file: str, parsers: dict[str, Callable[[Any], Any]]) -> None:
    """Parse each feature of the first Example alone, so a spec that does not fit the files
    is one DataError naming the feature (not a TF error mid-epoch)."""
    import tensorflow as tf

    try:
        first = next(iter(tf.data.TFRecordDataset(file).take(1)), None)
    except tf.errors.OpError as exc:  # DataLossError: random bytes, a truncated header
        raise DataError(f"{file}: not a TFRecord file, or damaged ({_tf_reason(exc)})") from None
    if first is None:
        raise DataError(f"{file}: no records")
    for name, parse in parsers.items():
        try:
            parse(first)
        except (tf.errors.InvalidArgumentError, ValueError) as exc:
            reason = first_line(exc)[:200]
            raise DataError(
                f"{file}: feature {name!r} does not match data.tfrecord.features.{name}: {reason}"
            ) from None


def _tf_reason(exc: BaseException) -> str:
    """TensorFlow's reason without its wrapping: ``{{function_node ...}} corrupted record
    at 0 (Is this even a TFRecord file?) [Op:IteratorGetNext] name:`` -> ``corrupted
    record at 0 (Is this even a TFRecord file?)``."""
    text = re.sub(r"\{\{.*?\}\}\s*", "", first_line(exc))
    return re.sub(r"\s*\[Op:.*$", "", text)[:200]


def _tfrecord_labels(
    files: list[str], name: str, label: Feature, sample: tuple[str, Feature]
) -> np.ndarray:
    """Every record's label, in one pass that also parses every record's input feature
    (``sample``: its name and spec), so a later record with a short or missing feature, or
    a NaN/inf value, is a DataError now rather than a TensorFlow error mid-epoch."""
    import tensorflow as tf

    spec = {name: tf.io.FixedLenFeature([1], getattr(tf, label.dtype))}
    x_name, x_feature = sample
    x_spec = (
        tf.io.FixedLenFeature([], tf.string)
        if x_feature.dtype == "string"
        else tf.io.FixedLenFeature([math.prod(x_feature.shape)], getattr(tf, x_feature.dtype))
    )

    def parse(records: Any) -> Any:
        parsed = tf.io.parse_example(records, spec | {x_name: x_spec})
        values = parsed[x_name]
        finite = tf.constant(True)
        if values.dtype.is_floating:
            finite = tf.reduce_all(tf.math.is_finite(values))
        return parsed[name][:, 0], finite

    labels = []
    for file in files:  # one file at a time: an error names the shard it is in
        try:
            read = [
                (np.asarray(batch), bool(ok))
                for batch, ok in tf.data.TFRecordDataset(file).batch(_LABEL_BATCH).map(parse)
            ]
        except tf.errors.OpError as exc:
            raise DataError(
                f"{file}: cannot read the records' features: {first_line(exc)[:200]}"
            ) from None
        if not all(ok for _, ok in read):
            raise DataError(f"{file}: feature {x_name!r} holds NaN or inf values")
        labels.extend(batch for batch, _ in read)
        checks.finite(
            Path(file), np.concatenate([b for b, _ in read] or [np.zeros(0)]), f"label {name!r}"
        )
    return labels_of(np.concatenate(labels))
