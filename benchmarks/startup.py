"""Start-up time of the commands that never import TensorFlow, against ``import click``.

Each command runs in a fresh interpreter, the way the ``prunecli`` console script starts
(``from prunecli.cli import main; main()``), ``REPS`` times alternating; the median wall
time is compared with ``python -c "import click"`` measured the same way (issue 11 target:
<= 2x for ``prunecli --help``, ``prunecli prune --help`` and ``prunecli validate``). prunecli
runs byte-compiled, as pip installs it (one untimed run of each command first writes its
``__pycache__``). Two floor rows: importing click, PyYAML and pydantic, and that plus one
pydantic model defined and validated (what any pydantic-validated config costs).

    .venv/bin/python benchmarks/startup.py [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "startup.json"
ENTRY = "import sys; from prunecli.cli import main; sys.argv[0] = 'prunecli'; main()"
FLOOR_MODEL = (
    "import click, yaml\nfrom pydantic import BaseModel, Field\n"
    "class A(BaseModel):\n    x: int = Field(1, ge=0)\n"
    "A.model_validate(yaml.safe_load('x: 2'))"
)
COMMANDS = {
    "import click": ["-c", "import click"],
    "prunecli --help": ["-c", ENTRY, "--help"],
    "prunecli prune --help": ["-c", ENTRY, "prune", "--help"],
    "prunecli validate": ["-c", ENTRY, "validate", str(ROOT / "configs" / "quickstart.yaml")],
    # not a prunecli command: the floor of any validate that parses YAML into pydantic models
    "floor: click+yaml+pydantic": ["-c", "import click, yaml; from pydantic import BaseModel"],
    # ... and with one model defined and validated (what any pydantic config must do:
    # pydantic.fields, annotated_types, the schema builder, the plugin lookup)
    "floor: + one model": ["-c", FLOOR_MODEL],
}
TARGET = 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    # As installed: pip byte-compiles a package (click's and pydantic's .pyc are there), so
    # prunecli's own modules get theirs too, written by one untimed run of each command;
    # with PYTHONDONTWRITEBYTECODE every start would recompile prunecli from source.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    for command in COMMANDS.values():
        subprocess.run([sys.executable, *command], env=env, check=True, capture_output=True)
    samples: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.reps):
        for name, command in COMMANDS.items():
            started = time.perf_counter()
            subprocess.run([sys.executable, *command], env=env, check=True, capture_output=True)
            samples[name].append(round(1000 * (time.perf_counter() - started), 1))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    base = medians["import click"]
    print(f"{'command':<24} {'median ms':>10} {'x click':>8}  target <= {TARGET}x")
    rows = {}
    for name, ms in medians.items():
        ratio = ms / base
        rows[name] = {"median_ms": ms, "ratio": round(ratio, 2), "samples_ms": samples[name]}
        verdict = "" if not name.startswith("prunecli") else ("PASS" if ratio <= TARGET else "FAIL")
        print(f"{name:<24} {ms:>10.1f} {ratio:>8.2f}  {verdict}")
    payload = {"reps": args.reps, "cpus": os.cpu_count(), "load": os.getloadavg(), "rows": rows}
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
