"""What only a real process shows: imports, a clean reload elsewhere, and signals.

* ``--help`` and ``validate`` never import TensorFlow (``sys.modules`` checked in a child).
* The written model loads in a Python that never imports prunecli, with no custom objects.
* SIGTERM (or Ctrl-C) in the middle of fine-tuning exits 130 and leaves only its checkpoint.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
from conftest import write_config

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


def python(code: str, *args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
    )


# --- no TensorFlow for help and validate ----------------------------------------------------

NO_TF_PROBE = """
import json, sys
from prunecli.cli.commands import main
code = main(sys.argv[1:], standalone_mode=False)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
print("PROBE " + json.dumps({"code": code, "heavy": heavy}))
"""


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--help"], "Usage: "),
        (["prune", "--help"], "--max-accuracy-drop"),
        (["inspect", "--help"], "--json"),
        (["validate", "{cfg}"], ": valid"),
        (["validate", "{cfg}", "--print", "--set", "prune.sparsity=0.9"], "sparsity: 0.9"),
    ],
    ids=["help", "prune-help", "inspect-help", "validate", "validate-print"],
)
def test_never_imports_tensorflow(tmp_path, argv, expected):
    cfg = write_config(tmp_path / "cfg.yaml", "prune:\n  sparsity: 0.8\n")
    done = python(NO_TF_PROBE, *(arg.format(cfg=cfg) for arg in argv))
    assert done.returncode == 0, done.stderr
    *shown, probe = done.stdout.rstrip("\n").split("\n")
    assert probe.startswith("PROBE ")
    report = json.loads(probe.removeprefix("PROBE "))
    assert report["heavy"] == []
    assert report["code"] in (0, None)
    assert expected in "\n".join(shown)


def test_console_script_validate_and_bad_config(tmp_path):
    good = write_config(tmp_path / "good.yaml", "prune:\n  sparsity: 0.8\n")
    bad = write_config(tmp_path / "bad.yaml", "prune:\n  sparsty: 0.8\n")
    command = [sys.executable, "-m", "prunecli", "validate"]
    ok = subprocess.run([*command, good], capture_output=True, text=True, env=ENV, timeout=60)
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, f"{good}: valid\n", "")
    failed = subprocess.run([*command, bad], capture_output=True, text=True, env=ENV, timeout=60)
    assert failed.returncode == 2 and failed.stdout == ""
    assert failed.stderr == (
        f"prunecli: error: {bad}: unknown key prune.sparsty (did you mean prune.sparsity?)\n"
    )


# --- the written model is the user's --------------------------------------------------------

RELOAD = """
import json, sys
import keras
import numpy as np
def leaves(m, prefix=""):
    for layer in m.layers:
        yield prefix + layer.name, layer
        if hasattr(layer, "layers"):
            yield from leaves(layer, prefix + layer.name + "/")
for path in sys.argv[1:]:
    model = keras.models.load_model(path)  # no custom_objects, safe_mode on
    layers = dict(leaves(model))
    kernels = {p: np.asarray(l.kernel) for p, l in layers.items() if hasattr(l, "kernel")}
    print(json.dumps({
        "classes": {p: type(l).__module__ + "." + type(l).__name__ for p, l in layers.items()},
        "constraints": {p: repr(l.kernel.constraint) for p, l in layers.items()
                        if hasattr(l, "kernel")},
        "sparsity": {p: 1 - np.count_nonzero(k) / k.size for p, k in kernels.items()},
        "compiled": bool(getattr(model, "compiled", False)),
        "compile": model.get_compile_config(),
        "prediction": list(model.predict(np.zeros((2, 8, 8, 1), "float32"), verbose=0).shape),
    }, default=str))
assert "prunecli" not in sys.modules, "prunecli was imported"
"""


@pytest.mark.parametrize(
    ("kind", "suffix"), [("cnn", ".keras"), ("nested", ".h5")], ids=["cnn-keras", "nested-h5"]
)
def test_output_loads_without_prunecli(cli, make_model, image_data, tmp_path, kind, suffix):
    model_path = make_model(kind, ".h5")
    target = tmp_path / f"pruned{suffix}"
    result = cli(
        "prune",
        model_path,
        "--data",
        image_data,
        "-o",
        target,
        "--epochs",
        "1",
        "--sparsity",
        "0.75",
        "--quiet",
    )
    assert result.exit_code == 0, result.stderr

    done = python(RELOAD, model_path, target)
    assert done.returncode == 0, done.stderr
    original, found = (json.loads(line) for line in done.stdout.strip().splitlines()[-2:])
    # The same layers under the same names and classes: no wrapper, no renaming.
    assert found["classes"] == original["classes"]
    assert {"conv", "hidden", "out"} <= {path.rsplit("/", 1)[-1] for path in found["classes"]}
    for path, cls in found["classes"].items():
        assert cls.startswith("keras."), (path, cls)
    assert set(found["constraints"].values()) == {"None"}  # the mask constraint is gone
    for path, value in found["sparsity"].items():
        assert abs(value - 0.75) <= 0.005, path
    assert found["compiled"] is True
    # The user's compile config survives: loss and metrics as the input had them.
    assert found["compile"]["loss"] == original["compile"]["loss"]
    assert "sparse_categorical_crossentropy" in json.dumps(found["compile"]["loss"])
    assert found["compile"]["metrics"] == original["compile"]["metrics"]
    assert "accuracy" in json.dumps(found["compile"]["metrics"])
    assert found["prediction"] == [2, 3]
    if suffix == ".keras":
        with zipfile.ZipFile(target) as archive:
            stored = archive.read("config.json").decode()
        assert "prunecli" not in stored and "Mask" not in stored


# --- signals --------------------------------------------------------------------------------


# A test runner may start its workers with SIGINT ignored, and an ignored signal stays
# ignored across exec (prunecli rightly keeps it so): give the child the default handlers.
DEFAULT_SIGNALS_THEN_PRUNECLI = """
import os, signal, sys
for signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(signum, signal.SIG_DFL)
os.execv(sys.executable, [sys.executable, "-m", "prunecli", *sys.argv[1:]])
"""


def _lines(stream, sink: queue.Queue) -> None:
    for line in stream:
        sink.put(line)
    sink.put(None)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_mid_finetune_exits_130_and_leaves_only_its_checkpoint(
    make_model, image_data, tmp_path, signum
):
    model_path = make_model("cnn", ".h5")
    input_bytes = model_path.read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    command = [
        sys.executable,
        "-c",
        DEFAULT_SIGNALS_THEN_PRUNECLI,
        "prune",
        model_path,
        "--data",
        image_data,
        "-o",
        out / "p.keras",
        "--epochs",
        "300",
        "--set",
        "finetune.batch_size=1",
    ]
    child = subprocess.Popen(
        [str(part) for part in command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        start_new_session=True,
    )
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=_lines, args=(child.stderr, lines), daemon=True)
    reader.start()
    seen: list[str] = []
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:  # wait until fine-tuning is under way
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            assert line is not None, "".join(seen)  # the run ended before fine-tuning
            seen.append(line)
            if line.startswith("epoch 2/"):
                break
        else:
            pytest.fail("no epoch log line within 90 s:\n" + "".join(seen))
        child.send_signal(signum)
        code = child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    reader.join(timeout=10)
    while (line := lines.get_nowait() if not lines.empty() else None) is not None:
        seen.append(line)
    assert code == 130, "".join(seen)
    # Fine-tuning checkpoints before it stops: the checkpoint is all that is left.
    assert [line for line in seen if not line.startswith(("epoch ", "loaded "))] == [
        f"prunecli: error: interrupted; checkpoint saved in {out / 'p.ckpt'}, no other output "
        "was written (rerun the same command with --resume to continue)\n"
    ]
    assert sorted(p.name for p in out.iterdir()) == ["p.ckpt"]
    assert [p.name for p in (out / "p.ckpt").iterdir()] == ["checkpoint.npz"]
    assert model_path.read_bytes() == input_bytes
    assert child.stdout.read() == ""
