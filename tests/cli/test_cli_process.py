"""What only a real process shows: imports, a clean reload elsewhere, and signals.

* ``--help`` and ``validate`` never import TensorFlow (``sys.modules`` checked in a child).
* The written model loads in a Python that never imports prunecli, with no custom objects.
* SIGTERM (or Ctrl-C) in the middle of fine-tuning exits 130 and leaves only its checkpoint.
"""

from __future__ import annotations

import json
import signal
import zipfile

import pytest
from helpers import (
    DEFAULT_SIGNALS,
    Lines,
    reaped,
    run_prunecli,
    run_python,
    start_python,
    write_config,
)

# --- no TensorFlow for help and validate ----------------------------------------------------

NO_TF_PROBE = """
import json, sys
from prunecli.cli.commands import main
code = main(sys.argv[1:], standalone_mode=False)
heavy = sorted(
    m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "matplotlib")
)
print("PROBE " + json.dumps({"code": code, "heavy": heavy}))
"""


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--help"], "Usage: "),
        (["prune", "--help"], "--max-accuracy-drop"),
        (["inspect", "--help"], "--json"),
        (["analyze", "--help"], "sensitivity"),
        (["validate", "{cfg}"], ": valid"),
        (["validate", "{cfg}", "--print", "--set", "prune.sparsity=0.9"], "sparsity: 0.9"),
    ],
    ids=["help", "prune-help", "inspect-help", "analyze-help", "validate", "validate-print"],
)
def test_never_imports_tensorflow(tmp_path, argv, expected):
    cfg = write_config(tmp_path / "cfg.yaml", "prune:\n  sparsity: 0.8\n")
    done = run_python(NO_TF_PROBE, *(arg.format(cfg=cfg) for arg in argv))
    assert done.returncode == 0, done.stderr
    *shown, probe = done.stdout.rstrip("\n").split("\n")
    assert probe.startswith("PROBE ")
    report = json.loads(probe.removeprefix("PROBE "))
    assert report["heavy"] == []
    assert report["code"] in (0, None)
    assert expected in "\n".join(shown)


def test_validate_starts_without_the_run_guards(tmp_path):
    # validate only reads YAML: no signal handlers, JSON stderr, temp folder or fuzzy
    # matcher are imported for it (start-up time, benchmarks/startup.py)
    cfg = write_config(tmp_path / "cfg.yaml", "prune:\n  sparsity: 0.8\n")
    probe = NO_TF_PROBE.replace(
        'in ("tensorflow", "keras", "matplotlib")', 'in ("tensorflow", "keras", "difflib")'
    ).replace("print(", "heavy += [m for m in ('prunecli.events', 'prunecli.faults', "
              "'prunecli.interrupts') if m in sys.modules]\nprint(")  # fmt: skip
    done = run_python(probe, "validate", str(cfg))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.rstrip("\n").split("\n")[-1].removeprefix("PROBE "))
    assert report["heavy"] == [] and report["code"] in (0, None)


def test_console_script_validate_and_bad_config(tmp_path):
    good = write_config(tmp_path / "good.yaml", "prune:\n  sparsity: 0.8\n")
    bad = write_config(tmp_path / "bad.yaml", "prune:\n  sparsty: 0.8\n")
    ok = run_prunecli("validate", good, timeout=60)
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, f"{good}: valid\n", "")
    failed = run_prunecli("validate", bad, timeout=60)
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
        "prune", model_path, "--data", image_data, "-o", target, "--epochs", "1", "--sparsity",
        "0.75", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr

    done = run_python(RELOAD, model_path, target)
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


# The child gets the default signal handlers, then becomes ``python -m prunecli``.
DEFAULT_SIGNALS_THEN_PRUNECLI = (
    DEFAULT_SIGNALS
    + """
os.execv(sys.executable, [sys.executable, "-m", "prunecli", *sys.argv[1:]])
"""
)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_mid_finetune_exits_130_and_leaves_only_its_checkpoint(
    make_model, image_data, out, tmp_path, signum
):
    model_path = make_model("cnn", ".h5")
    input_bytes = model_path.read_bytes()
    child = start_python(
        DEFAULT_SIGNALS_THEN_PRUNECLI, "prune", model_path, "--data", image_data,
        "-o", out / "p.keras", "--epochs", "300", "--set", "finetune.batch_size=1",
    )  # fmt: skip
    lines = Lines(child.stderr)
    with reaped(child):
        lines.until(lambda line: line.startswith("epoch 2/"), timeout=90)  # fine-tuning runs
        child.send_signal(signum)
        code = child.wait(timeout=60)
    seen = lines.rest()
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
