"""Helpers shared by test files (fixtures live in conftest.py): the one-line refusal a bad
input must give, file digests, and running the CLI in a child process whose peak memory is
measured (for resource bombs)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def refused(result: Any, *needles: str) -> str:
    """The single error line of a run that must exit 2: nothing else on stderr after it, no
    traceback, nothing on stdout; every ``needle`` appears in it."""
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("prunecli: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def sha256(path: Path) -> str:
    """A file's digest, or a folder's: every file's relative path and digest, sorted."""
    if path.is_dir():
        lines = sorted(f"{p.relative_to(path)} {sha256(p)}" for p in path.rglob("*") if p.is_file())
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def all_bytes(folder: Path) -> bytes:
    """Every byte of every file under ``folder`` (to search outputs for foreign bytes)."""
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


@dataclass
class Child:
    """A finished ``python -m prunecli`` child: exit code, stderr and peak RSS in MiB."""

    code: int
    stderr: str
    peak_mib: float
    seconds: float


def run_child(
    *args: str | Path, cwd: Path | None = None, timeout: float = 240, **env_vars: str
) -> Child:
    """``prunecli ARGS`` in a fresh process; its peak RSS is the kernel's high-water mark of
    the child's own address space (``VmHWM`` in /proc, polled: getrusage's maxrss would
    include the forking test process's). Killed after ``timeout`` seconds (code -9), so a
    hang fails the test instead of blocking the suite. ``env_vars`` are set in the child."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3", **env_vars}
    started = time.monotonic()
    peak_kib = 0
    with tempfile.TemporaryFile() as errors:  # a file, not a pipe: a chatty child never blocks
        child = subprocess.Popen(
            [sys.executable, "-m", "prunecli", *map(str, args)],
            cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=errors,
        )  # fmt: skip
        while child.poll() is None:
            peak_kib = max(peak_kib, _high_water_kib(child.pid))
            if time.monotonic() > started + timeout:
                child.kill()
                child.wait()
                break
            time.sleep(0.02)
        errors.seek(0)
        stderr = errors.read().decode(errors="replace")
    return Child(child.returncode, stderr, peak_kib / 1024, time.monotonic() - started)


def _high_water_kib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def child_refused(result: Child, *needles: str) -> str:
    """``refused`` for a child process (stderr may hold TensorFlow's native start-up lines
    before the error; the error is the last line, one line)."""
    assert result.code == 2, (result.code, result.stderr[-2000:])
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("prunecli: error: ") and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in last, (needle, last)
    return last
