"""Graphs that build lists of tensors pass the safe-mode op scan (``formats/graphops.py``).

A Keras 2 (tf_keras) SavedModel of a text classifier with a masked Embedding and a
Bidirectional LSTM uses ``EmptyTensorList`` in its while loops; the scan used to refuse it
("function cond_false_..._rewritten uses op EmptyTensorList, not pure compute ops"), exit 2
on a plain model. Building that file takes tf_keras most of a minute, so the test saves the
same list ops from a small ``tf.Module`` (checked by hand on the tf_keras file: it loads,
matches tf_keras within 1e-5 and prunes).
"""

from __future__ import annotations

import json

import numpy as np


def _list_module():
    """A ``tf.Module`` whose signature stacks per-step matmuls through the raw list ops an
    RNN's loop uses (``EmptyTensorList``, push, concat, gather, split, scatter)."""
    import tensorflow as tf

    class Steps(tf.Module):
        def __init__(self):
            self.kernel = tf.Variable(np.ones((4, 3), np.float32), name="kernel")

        @tf.function(input_signature=[tf.TensorSpec((None, 4), tf.float32)])
        def __call__(self, x):
            raw = tf.raw_ops
            steps = raw.EmptyTensorList(element_shape=[-1, 3], max_num_elements=-1,
                                        element_dtype=tf.float32)  # fmt: skip
            steps = raw.TensorListPushBack(input_handle=steps, tensor=tf.matmul(x, self.kernel))
            steps = raw.TensorListPushBack(input_handle=steps, tensor=tf.matmul(x, self.kernel))
            shape, dtype = [-1, 3], tf.float32
            picked = raw.TensorListGather(input_handle=steps, indices=[1, 0],
                                          element_shape=shape, element_dtype=dtype)  # fmt: skip
            again = raw.TensorListScatterV2(tensor=picked, indices=[0, 1], element_shape=[-1, 3],
                                            num_elements=2)  # fmt: skip
            joined, _ = raw.TensorListConcatV2(input_handle=again, element_shape=[-1, 3],
                                               leading_dims=tf.zeros([0], tf.int64),
                                               element_dtype=tf.float32)  # fmt: skip
            return tf.nn.softmax(joined[: tf.shape(x)[0]])

    return Steps()


def test_tensor_list_ops_are_pure_compute(cli, tmp_path):
    import tensorflow as tf

    from prunecli.formats import graphops

    module = _list_module()
    tf.saved_model.save(module, str(tmp_path / "steps"), signatures=module.__call__)
    proto = graphops.read_proto(tmp_path / "steps")
    functions = proto.meta_graphs[0].graph_def.library.function
    ops = {node.op for function in functions for node in function.node_def}
    assert {"EmptyTensorList", "TensorListConcatV2", "TensorListScatterV2"} <= ops
    assert graphops.first_unsafe(proto.meta_graphs[0]) is None
    result = cli("inspect", tmp_path / "steps", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["format"] == "savedmodel"
