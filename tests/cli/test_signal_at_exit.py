"""A SIGTERM that lands after the outputs are written, while Python and TensorFlow shut
down (about a second with the default handlers back), killed a finished run with 143;
a preempted batch job then retried and found its outputs in place (exit 2). The command's
own exit code must hold to the end."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from helpers import child_env


def test_sigterm_during_teardown_keeps_exit_0(make_model, npz_data, tmp_path):
    model = make_model("cnn", ".keras", train=False)
    target = tmp_path / "p.keras"
    child = subprocess.Popen(
        [sys.executable, "-m", "prunecli", "prune", model, "--data", npz_data,
         "--epochs", "0", "-o", target, "--log-format", "plain"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
    )  # fmt: skip
    try:
        for line in child.stderr:
            if line.startswith("wrote "):
                time.sleep(0.6)  # past the command, into interpreter teardown
                child.send_signal(signal.SIGTERM)
                break
        _, rest = child.communicate(timeout=120)
    finally:
        child.kill()
    assert child.returncode == 0, (child.returncode, rest)
    assert target.is_file() and (tmp_path / "p.report.json").is_file()
