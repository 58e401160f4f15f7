"""Batch jobs: strategies, multi-worker outputs, mixed precision, the report's environment.

Distributed runs need their devices configured before TensorFlow starts, so they run as
real ``python -m prunecli prune`` subprocesses: two logical CPUs stand in for two GPUs
(MirroredStrategy), two local processes on loopback ports for two machines
(MultiWorkerMirroredStrategy with ``TF_CONFIG``).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    PRUNECLI_MAIN,
    ROOT,
    build_nested,
    child_env,
    core_outputs,
    finish,
    report_beside,
    start_python,
    weights_by_path,
    write_config,
)

# Runs prunecli with two logical CPU devices: they must be set before TensorFlow starts.
TWO_CPUS = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from prunecli.cli.commands import main
sys.argv[0] = "prunecli"
main()
"""

# A gradual schedule, so masks are updated between steps (cross-replica context) as well.
CONFIG = """
seed: 3
prune: {sparsity: 0.6, schedule: {type: polynomial, end_epoch: 1, frequency: 3}}
finetune: {epochs: 1, batch_size: 10, learning_rate: 0.01}
data: {validation_split: 0}
"""


def _run(args: list[str | Path], cwd: Path, env: dict[str, str] | None = None, code: str = ""):
    environ = child_env(PYTHONPATH=str(ROOT), **(env or {}))
    return start_python(code or PRUNECLI_MAIN, *args, env=environ, cwd=cwd)


def test_mirrored_over_two_devices_matches_one_device(make_model, npz_data, tmp_path):
    model = make_model(suffix=".keras")
    cfg = write_config(tmp_path / "cfg.yaml", CONFIG)
    common = ["prune", model, "--config", cfg, "--set", f"data.train={npz_data}", "-q"]
    mirrored = _run(
        [*common, "--set", "finetune.strategy=mirrored", "-o", tmp_path / "two.keras"],
        tmp_path, code=TWO_CPUS,
    )  # fmt: skip
    single = _run(
        [*common, "--set", "finetune.strategy=none", "-o", tmp_path / "one.keras"], tmp_path
    )
    finish(single)
    finish(mirrored)

    env = report_beside(tmp_path / "two.keras")["environment"]
    assert (env["strategy"], env["replicas"], len(env["devices"])) == ("mirrored", 2, 2)
    assert report_beside(tmp_path / "one.keras")["environment"]["replicas"] == 1
    one, two = weights_by_path(tmp_path / "one.keras"), weights_by_path(tmp_path / "two.keras")
    assert one.keys() == two.keys()
    for key in ("conv/kernel", "hidden/kernel", "out/kernel"):
        # The masks held on both replicas: zeros exactly where the one-device run has them.
        np.testing.assert_array_equal(one[key] == 0, two[key] == 0, err_msg=key)
        assert 0.55 < np.mean(two[key] == 0) < 0.65
    for key in one:
        np.testing.assert_allclose(one[key], two[key], atol=1e-5, err_msg=key)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def test_multi_worker_writes_one_model_and_report(make_model, npz_data, out, tmp_path):
    model = make_model(suffix=".keras")
    cfg = write_config(tmp_path / "cfg.yaml", CONFIG)
    scratch = tmp_path / "scratch"  # each worker's TMPDIR: the non-chief's folder goes here
    scratch.mkdir()
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
    args = ["prune", model, "--config", cfg, "--set", f"data.train={npz_data}", "-q",
            "--set", "finetune.strategy=multi_worker", "-o", out / "pruned.keras"]  # fmt: skip
    workers = [
        _run(
            args,
            tmp_path,
            {
                "TF_CONFIG": json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": i}}
                ),
                "TMPDIR": str(scratch),
            },
        )
        for i in range(2)
    ]
    try:
        for worker in workers:
            finish(worker, timeout=300)
    finally:
        for worker in workers:
            worker.kill()

    assert core_outputs(out) == [
        "pruned.keras", "pruned.report.json", "pruned.report.md",
    ]  # fmt: skip
    assert not list(scratch.glob("prunecli-worker-*")), "the non-chief's outputs stay behind"
    env = report_beside(out / "pruned.keras")["environment"]
    assert (env["strategy"], env["replicas"]) == ("multi_worker", 2)
    weights = weights_by_path(out / "pruned.keras")
    assert 0.55 < np.mean(weights["hidden/kernel"] == 0) < 0.65


def test_mixed_precision_saves_float32_with_exact_zeros(cli, make_model, npz_data, tmp_path):
    model = make_model(suffix=".keras")
    cfg = write_config(tmp_path / "cfg.yaml", CONFIG)
    out = tmp_path / "mixed.keras"
    result = cli("prune", model, "--config", cfg, "--set", f"data.train={npz_data}", "-q",
                 "--set", "finetune.mixed_precision=true", "-o", out)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    env = report_beside(out)["environment"]
    assert env["precision"] == "mixed_bfloat16"
    rows = {row["path"]: row for row in report_beside(out)["layers"]}

    import zipfile

    stored = json.loads(zipfile.ZipFile(out).read("config.json"))
    layers = [layer["config"] for layer in stored["config"]["layers"]]
    policies = {c["dtype"]["config"]["name"] for c in layers if isinstance(c["dtype"], dict)}
    assert policies == {"float32"}
    weights = weights_by_path(out)
    for key in ("conv/kernel", "hidden/kernel", "out/kernel"):
        assert weights[key].dtype == np.float32
        zeros = np.mean(weights[key] == 0.0)  # exactly 0.0, not a bfloat16 round-off
        assert zeros == pytest.approx(rows[key.split("/")[0]]["sparsity"])
        assert 0.55 < zeros < 0.65


def test_precision_context_sets_and_restores_every_layer():
    import keras

    from prunecli.training import distribute

    model = build_nested()
    with distribute.precision(model, "mixed_bfloat16"):
        inner = model.get_layer("base").get_layer("conv")
        assert inner.compute_dtype == "bfloat16" and inner.variable_dtype == "float32"
        assert model(np.zeros((1, 8, 8, 1), "float32")).dtype == "bfloat16"
        assert keras.mixed_precision.dtype_policy().name == "mixed_bfloat16"
    assert model.get_layer("base").get_layer("conv").compute_dtype == "float32"
    assert model(np.zeros((1, 8, 8, 1), "float32")).dtype == "float32"
    assert keras.mixed_precision.dtype_policy().name == "float32"


def test_report_environment_names_strategy_replicas_devices_precision(
    cli, make_model, npz_data, tmp_path
):
    out = tmp_path / "plain.keras"
    result = cli("prune", make_model(), "--set", f"data.train={npz_data}", "--epochs", "1",
                 "-q", "-o", out)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    env = report_beside(out)["environment"]
    assert env["strategy"] == "default"  # auto, and no GPU here
    assert env["replicas"] == 1
    assert env["precision"] == "float32"
    assert len(env["devices"]) == 1 and "CPU:0" in env["devices"][0]


@pytest.mark.parametrize(
    ("cluster", "task", "chief"),
    [
        ({"worker": ["a:1", "b:2"]}, ("worker", 0), True),
        ({"worker": ["a:1", "b:2"]}, ("worker", 1), False),
        ({"chief": ["c:0"], "worker": ["a:1"]}, ("chief", 0), True),
        ({"chief": ["c:0"], "worker": ["a:1"]}, ("worker", 0), False),
    ],
)
def test_chief_is_the_chief_task_or_worker_zero(monkeypatch, cluster, task, chief):
    import tensorflow as tf

    from prunecli.training import distribute

    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task[0], task_id=task[1]
    )

    class Strategy:
        cluster_resolver = resolver

    monkeypatch.setitem(distribute.STRATEGIES, "none", lambda: ("default", Strategy()))
    assert distribute.start("none", mixed_precision=False).is_chief is chief


def test_malformed_tf_config_is_a_config_error(monkeypatch):
    from prunecli.errors import ConfigError
    from prunecli.training import distribute

    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1"]}, "task": {"index": 3}}')
    with pytest.raises(ConfigError, match="TF_CONFIG: expected JSON"):
        distribute.start("multi_worker", mixed_precision=False)
