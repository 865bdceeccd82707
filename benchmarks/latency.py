"""Cold command latencies: how long `mlxd <command>` takes from a fresh process.

A person types `mlxd jobs list` and `mlxd quantize ...` many times a day. This runs each
command N times (default 10) as a new process on a small catalog in a temporary MLXD_HOME (a
few models and jobs, no daemon), takes the median wall time, and prints it beside the floor
measured in the same run, `python -c "import click"` (what any Click program pays), as a
ratio. Targets: every read command at most 2.0x the floor (issue 7), every submit at most
3.0x (issue 19: the row and the queue without SQLAlchemy).

    .venv/bin/python benchmarks/latency.py [--runs 10] [--database-url postgresql://...]

With ``--database-url`` the catalog and the queue are a fresh database on that PostgreSQL
server (dropped afterwards).
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
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

PY = sys.executable
READ_TARGET = 2.0
SUBMIT_TARGET = 3.0
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


def fresh_database(base: str) -> tuple[str, Callable[[], None]]:
    """A new database on the server of ``base``: its URL and a function that drops it."""
    import psycopg

    name = f"mlxd_latency_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as con:
        con.execute(f'create database "{name}" template template0')

    def drop() -> None:
        with psycopg.connect(base, autocommit=True) as con:
            con.execute(f'drop database if exists "{name}" with (force)')

    return urlsplit(base)._replace(path=f"/{name}").geturl(), drop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--database-url", help="a PostgreSQL server to run on (default: SQLite)")
    args = ap.parse_args()
    drop = None
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, MLXD_HOME=str(Path(tmp) / "home"), HF_HUB_OFFLINE="1")
        env.pop("MLXD_DATABASE_URL", None)
        if args.database_url:
            env["MLXD_DATABASE_URL"], drop = fresh_database(args.database_url)
        try:
            run(args.runs, env, "postgresql" if drop else "sqlite")
        finally:
            if drop is not None:
                drop()


def run(runs: int, env: dict[str, str], backend: str) -> None:
    """Time every command on the catalog of ``env`` and print the table."""
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
    for n in range(runs):
        times["import click"].append(timed([PY, "-c", "import click"], env))
        for cmd in READS + SUBMITS:
            argv = [a.format(n=n) for a in cmd]
            times[" ".join(cmd)].append(timed([PY, "-m", "mlxd", *argv], env))
    floor = statistics.median(times["import click"])
    print(f"{backend}: {'command':<26} {'median s':>9} {'x floor':>8}  verdict")
    floor_name = 'python -c "import click" (floor)'
    print(f"{floor_name:<34} {floor:9.3f} {1.0:8.2f}")
    for name in names:
        med = statistics.median(times[name])
        target = READ_TARGET if name in {" ".join(c) for c in READS} else SUBMIT_TARGET
        verdict = f"{'PASS' if med / floor <= target else 'MISS'} (<= {target:.1f})"
        rows.append({"command": name, "median_s": med, "ratio": med / floor, "target": target})
        print(f"mlxd {name:<29} {med:9.3f} {med / floor:8.2f}  {verdict}")
    out = Path(__file__).with_name(f"last-latency-{backend}.json")
    out.write_text(json.dumps({"floor_s": floor, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
