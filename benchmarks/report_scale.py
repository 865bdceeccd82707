"""How `mlxd report` grows with the catalog: 1,000, 10,000 and 100,000 runs over 100 models.

    python benchmarks/report_scale.py                 # md and html at each size
    python benchmarks/report_scale.py --sizes 1000,10000

Each size gets a fresh temporary MLXD_HOME filled by fill_catalog (25 families x 4 variants,
two machines, three trials per run, a quality score per variant). The command runs as a user
runs it (a subprocess, output to a file); the first run is reported apart (cold caches).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.fill_catalog import fill_results  # noqa: E402


def time_report(home: Path, fmt: str, repeat: int) -> list[float]:
    env = dict(os.environ, MLXD_HOME=str(home))
    out = home / f"report.{fmt}"
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "mlxd", "report", "--format", fmt, "-o", str(out)],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.sizes.split(",")):
            home = Path(tmp) / f"home-{n}"
            fill_results(home, n, families=25)
            for fmt in ("md", "html"):
                t = time_report(home, fmt, args.repeat + 1)
                size = (home / f"report.{fmt}").stat().st_size
                rows.append((n, fmt, t[0], statistics.median(t[1:]), size))
    print(f"{'runs':>8} {'format':>6} {'first s':>8} {'median s':>9} {'size KB':>8}")
    for n, fmt, first, med, size in rows:
        print(f"{n:>8} {fmt:>6} {first:>8.2f} {med:>9.2f} {size / 1e3:>8.0f}")
    base = {fmt: med for n, fmt, _, med, _ in rows if n == rows[0][0]}
    for n, fmt, _, med, _ in rows:
        print(f"  {fmt} at {n:,} runs: {med / base[fmt]:.2f}x the time at {rows[0][0]:,}")


if __name__ == "__main__":
    main()
