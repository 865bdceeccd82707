"""Cold command latencies: how long `mlxd <read command>` takes from a fresh process.

A person types `mlxd jobs list` many times a day. This runs each command N times (default
10) as a new process on a small catalog in a temporary MLXD_HOME (a few models and jobs, no
daemon), takes the median wall time, and prints it beside the floor measured in the same run,
`python -c "import click"` (what any Click program pays), as a ratio. Target (issue 7): every
read command at most 2.0x the floor. Submits are shown too (they write through the Store).

    .venv/bin/python benchmarks/latency.py [--runs 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable
TARGET = 2.0
READS = [
    ["daemon", "status"],
    ["jobs", "list"],
    ["jobs", "show", "1"],
    ["jobs", "logs", "1"],
    ["models", "list"],
    ["models", "show", "tiny"],
    ["results"],
    ["sweep", "list"],
    ["system", "show"],
    ["jobs", "list", "--json"],
]
SUBMITS = [["quantize", "tiny", "--bits", "8", "--name", "q{n}"], ["bench", "tiny", "-p", "16"]]


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, MLXD_HOME=str(Path(tmp) / "home"), HF_HUB_OFFLINE="1")
        # As installed: bytecode cached (a PYTHONDONTWRITEBYTECODE shell would time compiling).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        subprocess.run(
            [PY, "-m", "mlxd", "models", "synth", "tiny"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run(
            [PY, "-m", "mlxd", "quantize", "tiny", "--bits", "4"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        rows = []
        # Interleaved: each round runs every command once, so drift hits all alike.
        names = [" ".join(c) for c in READS + SUBMITS]
        times: dict[str, list[float]] = {n: [] for n in ["import click", *names]}
        for cmd in READS:  # warm: writes the bytecode caches and the OS file cache
            timed([PY, "-m", "mlxd", *cmd], env)
        for n in range(args.runs):
            times["import click"].append(timed([PY, "-c", "import click"], env))
            for cmd in READS + SUBMITS:
                argv = [a.format(n=n) for a in cmd]
                times[" ".join(cmd)].append(timed([PY, "-m", "mlxd", *argv], env))
        floor = statistics.median(times["import click"])
        print(f"{'command':<34} {'median s':>9} {'x floor':>8}  verdict")
        floor_name = 'python -c "import click" (floor)'
        print(f"{floor_name:<34} {floor:9.3f} {1.0:8.2f}")
        for name in names:
            med = statistics.median(times[name])
            is_read = name in {" ".join(c) for c in READS}
            verdict = ("PASS" if med / floor <= TARGET else "MISS") if is_read else "(submit)"
            rows.append({"command": name, "median_s": med, "ratio": med / floor})
            print(f"mlxd {name:<29} {med:9.3f} {med / floor:8.2f}  {verdict}")
        out = Path(__file__).with_name("last-latency.json")
        out.write_text(json.dumps({"floor_s": floor, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
