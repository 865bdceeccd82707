"""The sharded bench's tok/s at two ranks against one rank on the same model (issue 13).

Two ranks run under ``mlx.launch`` with the ring backend over 127.0.0.1 (one machine: the
ranks share its cores, so this measures the sharding's overhead, not a second Mac's help);
one rank is the plain run. Interleaved rounds, medians.

    .venv/bin/python benchmarks/sharded.py [--size small] [--rounds 3] [-p 64] [-g 64]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="small")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-p", type=int, default=64)
    ap.add_argument("-g", type=int, default=64)
    args = ap.parse_args()
    from mlxd.engine.sharded import bench_sharded
    from mlxd.engine.synth import synth_model

    tmp = tempfile.TemporaryDirectory(prefix="mlxd-shard-")
    model = Path(tmp.name) / "model"
    synth_model(model, arch="llama", size=args.size, seed=0)
    tps: dict[int, list[float]] = {1: [], 2: []}
    peak: dict[int, list[int]] = {1: [], 2: []}
    for _ in range(args.rounds):
        for ranks in (1, 2):
            r = bench_sharded(model, ranks=ranks, prompt_tokens=args.p, gen_tokens=args.g)
            tps[ranks].append(r.generation_tps)
            peak[ranks].append(max(x.peak_memory_bytes for x in r.per_rank))
    for ranks in (1, 2):
        print(
            f"{ranks} rank(s): generation {statistics.median(tps[ranks]):8.1f} tok/s, "
            f"peak memory per rank {statistics.median(peak[ranks]) / 1e6:7.1f} MB"
        )
    ratio = statistics.median(tps[2]) / statistics.median(tps[1])
    mem = statistics.median(peak[2]) / statistics.median(peak[1])
    print(f"2 ranks / 1 rank: tok/s x{ratio:.2f}, peak memory per rank x{mem:.2f}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
