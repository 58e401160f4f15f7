"""A keras_hub task saved with its preprocessor attached, as every ``from_preset`` model
is: ``BertTextClassifier`` with a ``BertTextClassifierPreprocessor`` (its WordPiece
tokenizer). keras_hub runs the preprocessor inside ``fit``/``predict``, so prunecli's token
ids went into the tokenizer (exit 1, ``TypeError ... BertTokenizer.call()``). The task now
runs without it (keras_hub's documented ``task.preprocessor = None``) and the saved file
gets it back: the pruned model still classifies raw strings, loaded without prunecli.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import run_python

pytest.importorskip("keras_hub")

VOCABULARY = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(27)]
RELOAD = """
import json, sys, keras, keras_hub
model = keras.saving.load_model(sys.argv[1])
probabilities = model.predict(["w1 w2 w3", "w4 w5"], verbose=0)
layer = model.backbone.get_layer("transformer_layer_0")._self_attention_layer
kernel = keras.ops.convert_to_numpy(layer._query_dense.kernel)
print(json.dumps({"tokenizer": type(model.preprocessor.tokenizer).__name__,
                  "rows": len(probabilities), "query_zeros": int((kernel == 0).sum()),
                  "prunecli": any(m.startswith("prunecli") for m in sys.modules)}))
"""


def _classifier(path):
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    models = keras_hub.models
    tokenizer = models.BertTokenizer(vocabulary=VOCABULARY)
    preprocessor = models.BertTextClassifierPreprocessor(tokenizer, sequence_length=6)
    backbone = models.BertBackbone(
        vocabulary_size=len(VOCABULARY), num_layers=1, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=6, name="bert_backbone",
    )  # fmt: skip
    models.BertTextClassifier(backbone, 3, preprocessor=preprocessor).save(path)


def test_a_task_with_its_preprocessor_prunes_on_token_ids_and_keeps_it(cli, tmp_path):
    _classifier(tmp_path / "bert.keras")
    rng = np.random.default_rng(0)
    tokens = rng.integers(5, len(VOCABULARY), (30, 6)).astype(np.int32)
    ones = np.ones_like(tokens)
    np.savez(tmp_path / "tokens.npz", token_ids=tokens, segment_ids=0 * ones,
             padding_mask=ones, y=np.arange(30) % 3)  # fmt: skip
    out = tmp_path / "pruned.keras"
    done = cli("prune", tmp_path / "bert.keras", "--data", tmp_path / "tokens.npz",
               "--epochs", "1", "-o", out, "--json", "--quiet")  # fmt: skip
    assert done.exit_code == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["data"]["task"] == "sparse" and report["after"]["accuracy"] is not None
    found = run_python(RELOAD, out)
    assert found.returncode == 0, found.stderr[-3000:]
    again = json.loads(found.stdout.strip().splitlines()[-1])
    assert again == {"tokenizer": "BertTokenizer", "rows": 2, "query_zeros": 32,
                     "prunecli": False}  # fmt: skip
