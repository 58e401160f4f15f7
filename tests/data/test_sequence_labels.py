"""Labels per position (a causal language model's next tokens, a tagger's tags): an
integer ``y`` of shape (samples, length) for a model whose output is (samples, length,
classes) is a classification task scored per token, not a regression with no accuracy.

keras_hub's ``GPT2CausalLM`` / ``LlamaCausalLM`` given ``token_ids``, ``padding_mask`` and
next-token ``y`` in one ``.npz`` used to report ``data.task: regression`` and accuracy
null before and after.
"""

from __future__ import annotations

import json

import keras
import numpy as np
from helpers import run_python

LENGTH, VOCABULARY = 6, 12
RELOAD = """
import json, sys, keras, numpy as np
model = keras.saving.load_model(sys.argv[1])
val = np.load(sys.argv[2])
predicted = np.argmax(model.predict(val["x"], verbose=0), axis=-1)
print(json.dumps({"accuracy": float(np.mean(predicted == val["y"])),
                  "prunecli": any(m.startswith("prunecli") for m in sys.modules)}))
"""


def _tokens(path, count, seed):
    """Each target is the input token plus one (mod the vocabulary): learnable per token."""
    x = np.random.default_rng(seed).integers(0, VOCABULARY, (count, LENGTH)).astype(np.int32)
    np.savez(path, x=x, y=(x + 1) % VOCABULARY)
    return path


def test_per_token_labels_are_a_sparse_task_with_per_token_accuracy(cli, tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((LENGTH,), dtype="int32")
    x = keras.layers.Embedding(VOCABULARY, 8, name="embed")(inputs)
    x = keras.layers.Dense(16, activation="relu", name="hidden")(x)
    model = keras.Model(inputs, keras.layers.Dense(VOCABULARY, name="logits")(x))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.save(tmp_path / "tagger.keras")
    train, val = _tokens(tmp_path / "train.npz", 64, 0), _tokens(tmp_path / "val.npz", 16, 1)
    out = tmp_path / "pruned.keras"
    data = ["--set", f"data.train={train}", "--set", f"data.validation={val}"]
    done = cli("prune", tmp_path / "tagger.keras", *data, "--epochs", "1", "-o", out, "--json",
               "--quiet")  # fmt: skip
    assert done.exit_code == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["data"]["task"] == "sparse"
    assert report["data"]["validation_samples"] == 16
    assert report["before"]["accuracy"] is not None
    found = run_python(RELOAD, out, val)
    assert found.returncode == 0, found.stderr[-2000:]
    again = json.loads(found.stdout.strip().splitlines()[-1])
    assert again["prunecli"] is False
    assert report["after"]["accuracy"] == again["accuracy"]  # over all 16 x 6 tokens
