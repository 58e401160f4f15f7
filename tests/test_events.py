"""``--log-format json``: every stderr line is one JSON event, TensorFlow's own lines included.

A real process with TensorFlow's C++ logging fully on (``TF_CPP_MIN_LOG_LEVEL=0``): what it
writes to file descriptor 2 must arrive wrapped as ``log`` events, never as raw lines.
"""

from __future__ import annotations

import json
import logging
import os
import warnings

from helpers import parsed_events, run_json_logged, write_config

from prunecli import events

EPOCH_FIELDS = {"event", "epoch", "epochs", "step", "loss", "metrics", "sparsity", "elapsed_s"}


def untimed(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in records]


def test_a_prune_run_is_json_events_only(make_model, npz_data, tmp_path):
    model = make_model("cnn", ".h5")
    config = write_config(
        tmp_path / "cfg.yaml",
        f"finetune: {{epochs: 2, batch_size: 16}}\ndata: {{train: {npz_data}}}\n",
    )
    done = run_json_logged(
        "prune", model, "-c", config, "-o", tmp_path / "p.keras", "--log-format", "json", "--json"
    )
    assert done.returncode == 0, done.stderr
    json.loads(done.stdout)  # the report alone on stdout
    records = parsed_events(done.stderr)
    kinds = [r["event"] for r in records]
    assert kinds[0] == "loaded" and kinds[-1] == "wrote", kinds
    epochs = [r for r in records if r["event"] == "epoch"]
    assert [(r["epoch"], r["epochs"], r["step"]) for r in epochs] == [(1, 2, 6), (2, 2, 12)]
    for record in epochs:
        assert set(record) == EPOCH_FIELDS
        assert record["loss"] > 0 and 0 < record["sparsity"] < 1
        assert isinstance(record["metrics"], dict)
    assert [r["step"] for r in records if r["event"] == "checkpoint"] == [6, 12]
    elapsed = [r["elapsed_s"] for r in records]
    assert elapsed == sorted(elapsed)
    for record in records:  # TF's native lines, if any, only ever arrive wrapped
        if record["event"] == "log":
            assert set(record) >= {"source", "message"}
    assert not (tmp_path / "p.ckpt").exists()


def test_errors_are_events_too(tmp_path):
    bad = write_config(tmp_path / "bad.yaml", "prune:\n  sparsty: 0.8\n")
    done = run_json_logged("prune", tmp_path / "m.h5", "-c", bad, "--log-format", "json")
    assert done.returncode == 2 and done.stdout == ""
    assert untimed(parsed_events(done.stderr)) == [
        {
            "event": "error",
            "message": f"{bad}: unknown key prune.sparsty (did you mean prune.sparsity?)",
            "exit_code": 2,
        }
    ]


def test_native_lines_warnings_and_logging_become_events(capfd):
    with events.json_stderr(True):
        os.write(2, b"W0000 00:00:1.0 1 native.cc:1] a C++ warning\n")
        warnings.warn("a Python warning", UserWarning, stacklevel=1)
        logging.getLogger("absl").error("an absl record")
        events.emit("epoch", epoch=1, loss=float("nan"), sparsity=0.5)
    records = untimed(parsed_events(capfd.readouterr().err))
    assert {"event": "epoch", "epoch": 1, "loss": None, "sparsity": 0.5} in records
    assert {"event": "warning", "category": "UserWarning", "message": "a Python warning"} in records
    assert {"event": "log", "source": "absl", "level": "ERROR", "message": "an absl record"} in (
        records
    )
    assert {
        "event": "log",
        "source": "native",
        "message": "W0000 00:00:1.0 1 native.cc:1] a C++ warning",
    } in records
    # Descriptor 2 and sys.stderr are themselves again afterwards.
    os.write(2, b"raw\n")
    assert capfd.readouterr().err == "raw\n"
