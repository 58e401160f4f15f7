"""Build the bundled sample model and dataset for prunecli.

Everything here is derived from scikit-learn's bundled 8x8 digits data
(``sklearn.datasets.load_digits``, which ships inside the scikit-learn package), so nothing
is downloaded.

How the sample is made:

1. Images: each 8x8 digit (pixel values 0..16) is scaled to 0..255, resized to 28x28 with
   Pillow's BILINEAR filter and saved as an 8-bit grayscale PNG (mode "L"). The 1797 digits
   are split 80/20 into train/val with a stratified split (seed 0) and written to::

       sample_models/digits/train/<digit>/<nnnn>.png
       sample_models/digits/val/<digit>/<nnnn>.png

   where ``nnnn`` is the zero-padded index into ``load_digits()`` and ``<digit>`` is "0".."9".
   Any existing ``sample_models/digits/`` is removed first, so reruns give identical trees.
2. Model: a small Keras 3 CNN named "digits_cnn" (conv1 -> pool -> conv2 -> pool -> flatten ->
   dense1 -> dropout -> logits). It has no Rescaling layer: the tool feeds ``pixels / 255``.
   It is trained on the train PNGs read back from disk (so it sees exactly what the tool will
   feed) with fixed seeds and TensorFlow op determinism enabled.
3. The model is saved in Keras' legacy HDF5 format to ``sample_models/digits_cnn.h5``
   (written to a temporary file in the same folder, then moved into place atomically).
4. The saved file is reloaded with ``keras.models.load_model`` (default safe_mode), its
   compile config is checked, and the reloaded model's val accuracy is printed.

Rerun from the repository root with::

    .venv/bin/python sample_models/make_sample.py
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SEED = 0
VAL_FRACTION = 0.2
IMAGE_SIZE = 28
NUM_CLASSES = 10
EPOCHS = 20
BATCH_SIZE = 32
LEARNING_RATE = 1e-3
MIN_VAL_ACCURACY = 0.95

HERE = Path(__file__).resolve().parent
DIGITS_DIR = HERE / "digits"
MODEL_PATH = HERE / "digits_cnn.h5"


def digit_to_image(pixels: np.ndarray) -> Image.Image:
    """Scale an 8x8 digit (0..16) to 0..255 and resize it to a 28x28 grayscale image."""
    scaled = np.clip(np.rint(pixels * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    small = Image.fromarray(scaled, mode="L")
    return small.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)


def split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified train/val split of the sample indices."""
    indices = np.arange(len(labels))
    train_idx, val_idx = train_test_split(
        indices, test_size=VAL_FRACTION, stratify=labels, random_state=SEED, shuffle=True
    )
    return np.sort(train_idx), np.sort(val_idx)


def write_split(
    images: np.ndarray, labels: np.ndarray, indices: np.ndarray, split_dir: Path
) -> None:
    """Write the chosen digits as PNGs under ``split_dir/<digit>/<nnnn>.png``."""
    for digit in range(NUM_CLASSES):
        (split_dir / str(digit)).mkdir(parents=True, exist_ok=True)
    for index in indices:
        path = split_dir / str(int(labels[index])) / f"{int(index):04d}.png"
        digit_to_image(images[index]).save(path, format="PNG")


def write_dataset() -> None:
    """Recreate ``digits/`` from scratch with the train and val splits."""
    digits = load_digits()
    images = np.asarray(digits.images)
    labels = np.asarray(digits.target)
    train_idx, val_idx = split_indices(labels)
    if DIGITS_DIR.exists():
        shutil.rmtree(DIGITS_DIR)
    write_split(images, labels, train_idx, DIGITS_DIR / "train")
    write_split(images, labels, val_idx, DIGITS_DIR / "val")
    print(f"wrote {len(train_idx)} train and {len(val_idx)} val PNGs to {DIGITS_DIR}")


def load_split(split_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a split back from its PNGs as float32 (n, 28, 28, 1) in [0, 1] plus int labels."""
    paths = sorted(split_dir.glob("*/*.png"))
    x = np.empty((len(paths), IMAGE_SIZE, IMAGE_SIZE, 1), dtype=np.float32)
    y = np.empty((len(paths),), dtype=np.int64)
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            x[i, :, :, 0] = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
        y[i] = int(path.parent.name)
    return x, y


def build_model() -> keras.Model:
    """The sample CNN; input is already scaled to [0, 1] by the caller."""
    return keras.Sequential(
        [
            keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 1)),
            keras.layers.Conv2D(16, 3, activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(name="pool1"),
            keras.layers.Conv2D(32, 3, activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(name="pool2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(64, activation="relu", name="dense1"),
            keras.layers.Dropout(0.2, name="dropout"),
            keras.layers.Dense(NUM_CLASSES, activation="softmax", name="logits"),
        ],
        name="digits_cnn",
    )


def compile_model(model: keras.Model) -> None:
    """Compile with a setup whose config round-trips through the legacy .h5 format."""
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def train_model(
    x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray
) -> keras.Model:
    """Build, compile and train the model deterministically."""
    keras.utils.set_random_seed(SEED)
    model = build_model()
    compile_model(model)
    model.fit(
        x_train,
        y_train,
        epochs=EPOCHS,
        batch_size=BATCH_SIZE,
        validation_data=(x_val, y_val),
        shuffle=True,
        verbose=2,
    )
    return model


def save_atomically(model: keras.Model, path: Path) -> None:
    """Save as legacy HDF5 to a temp file next to ``path``, then move it into place."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".h5", dir=path.parent)
    os.close(fd)
    try:
        model.save(tmp_name)
        os.chmod(tmp_name, 0o644)  # mkstemp creates the file as 0600
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    print(f"saved {path} ({path.stat().st_size} bytes)")


def loss_name(loss: object) -> str | None:
    """Name of a loss as found in a compile config.

    A string loss saved to legacy .h5 comes back from ``get_compile_config()`` as a serialized
    function, ``{"module": "builtins", "class_name": "function", "config": "<name>", ...}``,
    and a loss object as ``{"class_name": ..., "config": {"name": "<name>", ...}}``.
    """
    if isinstance(loss, str):
        return loss
    if isinstance(loss, dict):
        config = loss.get("config")
        if isinstance(config, str):
            return config
        if isinstance(config, dict) and isinstance(config.get("name"), str):
            return config["name"]
    return None


def check_compile_config(model: keras.Model, path: Path) -> dict[str, Any]:
    """Check that the compile config survived the reload and can be used to recompile."""
    config = model.get_compile_config()
    if config is None:
        raise RuntimeError(f"{path}: compile config did not survive the reload")
    if loss_name(config.get("loss")) != "sparse_categorical_crossentropy":
        raise RuntimeError(f"{path}: unexpected loss after reload: {config.get('loss')!r}")
    keras.models.clone_model(model).compile_from_config(config)
    return config


def verify(path: Path, x_val: np.ndarray, y_val: np.ndarray) -> float:
    """Reload the saved model, check its compile config and return its val accuracy."""
    model = keras.models.load_model(path)
    config = check_compile_config(model, path)
    probs = model.predict(x_val, batch_size=256, verbose=0)
    accuracy = float(np.mean(np.argmax(probs, axis=1) == y_val))
    _, evaluated = model.evaluate(x_val, y_val, batch_size=256, verbose=0)
    print(f"reloaded {model.name}: {model.count_params()} params")
    print(f"compile config: loss={loss_name(config['loss'])!r}, metrics={config['metrics']!r}")
    print(f"reloaded val accuracy: {accuracy:.4f} (evaluate: {float(evaluated):.4f})")
    return accuracy


def main() -> int:
    """Regenerate the dataset and the model, then verify the saved file."""
    start = time.perf_counter()
    tf.config.experimental.enable_op_determinism()
    write_dataset()
    x_train, y_train = load_split(DIGITS_DIR / "train")
    x_val, y_val = load_split(DIGITS_DIR / "val")
    model = train_model(x_train, y_train, x_val, y_val)
    save_atomically(model, MODEL_PATH)
    accuracy = verify(MODEL_PATH, x_val, y_val)
    print(f"done in {time.perf_counter() - start:.1f}s")
    if accuracy < MIN_VAL_ACCURACY:
        print(f"val accuracy {accuracy:.4f} is below {MIN_VAL_ACCURACY}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
