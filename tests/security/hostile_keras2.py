"""Build hostile Keras 2 (tf_keras) model files for tests/security.

Run as ``TF_USE_LEGACY_KERAS=1 python hostile_keras2.py OUT MARKER`` in its own process
(tf_keras must be ``tf.keras`` before TensorFlow loads). Writes into OUT:

- ``k2_dense.h5``: a plain compiled Keras 2 MLP (6 -> 8 -> 3), the base that tests turn
  into HDF5 external-storage / virtual-dataset / external-link variants;
- ``k2_hidden_lambda_sm/``: a Keras 2 SavedModel whose Lambda layer creates the folder
  MARKER when called, its class renamed to ``Dense`` in the root node of
  ``keras_metadata.pb`` (left intact in the layer's own node), as an attacker would hide it.

The Lambda runs once while tf_keras traces it for saving: the marker is removed before
exiting, so a marker found later was made by whoever loaded the model.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import tf_keras as k
from tf_keras.protobuf import saved_metadata_pb2


def hide_lambda(folder: str) -> None:
    """Rename every Lambda to Dense in the root node only (what a root-only check reads)."""
    path = os.path.join(folder, "keras_metadata.pb")
    metadata = saved_metadata_pb2.SavedMetadata()
    with open(path, "rb") as handle:
        metadata.ParseFromString(handle.read())
    for node in metadata.nodes:
        if node.node_path == "root":
            config = json.loads(node.metadata)
            text = json.dumps(config).replace('"class_name": "Lambda"', '"class_name": "Dense"')
            node.metadata = text
    with open(path, "wb") as handle:
        handle.write(metadata.SerializeToString())


def main(out: str, marker: str) -> None:
    k.utils.set_random_seed(0)
    dense = k.Sequential(
        [
            k.Input((6,)),
            k.layers.Dense(8, activation="relu", name="d1"),
            k.layers.Dense(3, name="d2"),
        ]
    )
    dense.compile(optimizer="adam", loss="mse")
    dense.save(f"{out}/k2_dense.h5")

    code = f"lambda t: t if __import__('os').makedirs({marker!r}, exist_ok=True) else t"
    payload = eval(code)  # a real lambda: tf_keras stores its bytecode
    sneaky = k.Sequential(
        [k.Input((6,)), k.layers.Dense(4, name="d"), k.layers.Lambda(payload, name="sneaky")]
    )
    sneaky.save(f"{out}/k2_hidden_lambda_sm")
    hide_lambda(f"{out}/k2_hidden_lambda_sm")
    shutil.rmtree(marker, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
