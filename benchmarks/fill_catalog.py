"""Fill a catalog with synthetic benchmark runs, then time `mlxd results --json` on it.

    python benchmarks/fill_catalog.py -n 100000            # a fresh temporary MLXD_HOME
    python benchmarks/fill_catalog.py -n 100000 --home DIR

The rows are made up (a handful of models, two machines, two mlx versions, three trials per
run) and inserted with ``executemany``: filling 100,000 runs takes seconds, not the hours a
real daemon would need. Never point ``--home`` at a catalog you care about.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

HOSTS = (("mac-studio", "0.32.0", 800e9), ("mbp-m3", "0.31.2", 300e9))
QUANTS = ((None, None, "float32", 32.0), (4, 64, None, 4.5), (8, 64, None, 8.5), (4, 32, None, 5.0))


def _ts(dt: datetime) -> str:
    # SQLAlchemy's SQLite storage format for UTC datetimes.
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def fill_results(
    home: str | os.PathLike, n_runs: int, *, trials: int = 3, seed: int = 0, families: int = 5
) -> int:
    """Insert ``n_runs`` synthetic bench runs (and their trials) into ``home``'s catalog.

    The catalog is created (migrated) through the Store first; the rows go in with plain
    sqlite3 ``executemany`` in one transaction. Returns the number of runs in the catalog.
    """
    from mlxd.catalog.store import Store
    from mlxd.config import paths

    p = paths(home)
    Store(p).close()  # creates the schema at head
    rng = random.Random(seed)
    now = datetime.now(UTC)
    con = sqlite3.connect(p.catalog_db, timeout=30)
    try:
        with con:
            system_ids = []
            for host, mlx_version, bandwidth in HOSTS:
                con.execute(
                    "insert or ignore into system (fingerprint, host, os_name, os_version, "
                    "cpu, chip, backend, python_version, mlx_version, mlx_lm_version, "
                    "mlxd_version, created_at) values (?, ?, 'Darwin', '15.1', 'Apple M3', "
                    "'Apple M3', 'metal', '3.11', ?, '0.28.0', '0.1.0', ?)",
                    (f"fill-{host}", host, mlx_version, _ts(now)),
                )
                system_ids += con.execute(
                    "select id from system where fingerprint = ?", (f"fill-{host}",)
                ).fetchone()
                con.execute(
                    "insert into probe (host, cpu, backend, memory_bandwidth_bytes_per_s, "
                    "method, created_at, details) select ?, 'Apple M3', 'metal', ?, "
                    "'synthetic', ?, '{}' where not exists (select 1 from probe where host = ?)",
                    (host, bandwidth, _ts(now), host),
                )
            models = []  # (id, weight bytes)
            for family in range(families):
                base_id = None
                for bits, group, dtype, bpw in QUANTS:
                    name = f"fill-{family}" + (f"-{bits}bit-g{group}" if bits else "")
                    size = int(135e6 * bpw / 8)
                    con.execute(
                        "insert or ignore into model (name, path, format, source, "
                        "architecture, num_parameters, size_bytes, dtype, quant_bits, "
                        "quant_group_size, quant_mode, bits_per_weight, synthetic, parent_id, "
                        "managed, details, created_at) values (?, ?, 'mlx', ?, 'llama', "
                        "135000000, ?, ?, ?, ?, ?, ?, 1, ?, 1, '{}', ?)",
                        (
                            name,
                            f"/nonexistent/{name}",
                            "quantize" if bits else "synth",
                            size,
                            dtype,
                            bits,
                            group,
                            "affine" if bits else None,
                            bpw,
                            base_id,
                            _ts(now),
                        ),
                    )
                    (model_id,) = con.execute(
                        "select id from model where name = ?", (name,)
                    ).fetchone()
                    base_id = base_id or model_id
                    models.append((model_id, size))
                    # a quality score per variant (KL grows as the bits shrink)
                    kl = None if model_id == base_id else 0.5 / bits**2
                    con.execute(
                        "insert into qualityrun (model_id, base_model_id, created_at, "
                        "text_name, text_sha256, tokens, perplexity, kl_mean, top1_agreement, "
                        "details) select ?, ?, ?, 'default', 'fill', 511, ?, ?, ?, '{}' where "
                        "not exists (select 1 from qualityrun where model_id = ?)",
                        (
                            model_id,
                            None if kl is None else base_id,
                            _ts(now),
                            9.0 + (kl or 0),
                            kl,
                            None if kl is None else 1 - kl,
                            model_id,
                        ),
                    )
            first = con.execute("select coalesce(max(id), 0) from benchrun").fetchone()[0] + 1
            runs, trial_rows = [], []
            for i in range(n_runs):
                model_id, weight_bytes = rng.choice(models)
                p_tok, g_tok = rng.choice((128, 512, 2048)), rng.choice((64, 128))
                gen = [rng.gauss(60.0, 2.0) for _ in range(trials)]
                prompt = [rng.gauss(900.0, 30.0) for _ in range(trials)]
                ttft = [p_tok / x for x in prompt]
                peak = int(weight_bytes * 1.2)
                created = now - timedelta(minutes=n_runs - i)
                runs.append(
                    (
                        first + i,
                        model_id,
                        rng.choice(system_ids),
                        _ts(created),
                        p_tok,
                        g_tok,
                        trials,
                        statistics.fmean(prompt),
                        statistics.median(prompt),
                        _std(prompt),
                        statistics.fmean(gen),
                        statistics.median(gen),
                        _std(gen),
                        statistics.fmean(ttft),
                        statistics.median(ttft),
                        _std(ttft),
                        peak,
                        peak + 50_000_000,
                        weight_bytes,
                    )
                )
                for t in range(trials):
                    trial_rows.append(
                        (
                            first + i,
                            t,
                            p_tok,
                            g_tok,
                            prompt[t],
                            gen[t],
                            ttft[t],
                            ttft[t] + g_tok / gen[t],
                            peak,
                        )
                    )
            con.executemany(
                "insert into benchrun (id, model_id, system_id, created_at, prompt_tokens, "
                "gen_tokens, batch_size, depth, trials, warmup, seed, prompt_tps_mean, "
                "prompt_tps_median, prompt_tps_std, generation_tps_mean, "
                "generation_tps_median, generation_tps_std, ttft_s_mean, ttft_s_median, "
                "ttft_s_std, peak_memory_bytes, peak_rss_bytes, model_memory_bytes, details, "
                "noisy) values (?, ?, ?, ?, ?, ?, 1, 0, ?, 1, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                "?, ?, ?, '{}', 0)",
                runs,
            )
            con.executemany(
                "insert into benchtrial (run_id, trial_index, prompt_tokens, "
                "generated_tokens, prompt_tps, generation_tps, ttft_s, total_s, "
                "peak_memory_bytes) values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                trial_rows,
            )
        return con.execute("select count(*) from benchrun").fetchone()[0]
    finally:
        con.close()


def fill_jobs(home: str | os.PathLike, n_jobs: int, *, seed: int = 0) -> int:
    """Insert ``n_jobs`` finished synthetic jobs (bench and quantize of the filled models,
    a few failed) into ``home``'s catalog (made by :func:`fill_results` first): what a
    jobs list or the queue page reads. Returns the number of jobs in the catalog."""
    from mlxd.config import paths

    rng = random.Random(seed)
    now = datetime.now(UTC)
    con = sqlite3.connect(paths(home).catalog_db, timeout=30)
    try:
        with con:
            names = [r[0] for r in con.execute("select name from model order by id")]
            rows = []
            for i in range(n_jobs):
                kind = rng.choice(("bench", "bench", "quantize"))
                params = {"model": rng.choice(names)} | (
                    {"bits": 4} if kind == "quantize" else {"prompt_tokens": [128]}
                )
                submitted = now - timedelta(minutes=10 * (n_jobs - i))
                started = submitted + timedelta(seconds=rng.uniform(0.2, 30))
                finished = started + timedelta(seconds=rng.uniform(5, 600))
                failed = rng.random() < 0.05
                rows.append(
                    (
                        kind,
                        json.dumps(params),
                        "failed" if failed else "succeeded",
                        "the child ran out of memory" if failed else None,
                        rng.choice(("alice", "bob", None)),
                        _ts(submitted),
                        _ts(started),
                        _ts(finished),
                        HOSTS[i % len(HOSTS)][0],
                    )
                )
            con.executemany(
                "insert into job (kind, params, status, priority, attempts, max_attempts, "
                "progress, error, cancel_requested, submitted_by, submitted_at, started_at, "
                "finished_at, host, result, interruptions, crashes, pool) values "
                "(?, ?, ?, 0, 1, 3, 1.0, ?, 0, ?, ?, ?, ?, ?, '{}', 0, 0, 'default')",
                rows,
            )
        return con.execute("select count(*) from job").fetchone()[0]
    finally:
        con.close()


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def time_command(home: Path, args: list[str], repeat: int) -> list[float]:
    """Wall-clock seconds of ``mlxd ARGS`` (stdout to a file, as a script would read it)."""
    env = dict(os.environ, MLXD_HOME=str(home))
    times = []
    with tempfile.TemporaryFile() as sink:
        for _ in range(repeat):
            sink.seek(0)
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "mlxd", *args], env=env, stdout=sink, check=True)
            times.append(time.perf_counter() - start)
        size = sink.tell()
    print(f"  output: {size / 1e6:.1f} MB", file=sys.stderr)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--runs", type=int, default=100_000)
    ap.add_argument("--home", type=Path, help="MLXD_HOME to fill (default: a temporary one)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = args.home or Path(tmp) / "mlxd-home"
        start = time.perf_counter()
        total = fill_results(home, args.runs)
        print(f"filled {total} runs in {time.perf_counter() - start:.1f} s ({home})")
        rows = []
        for cmd in (
            ["--help"],
            ["results", "--json"],
            ["results", "--json", "--machine", HOSTS[0][0], "--since", "7d"],
            ["results", "--json", "--limit", "0"],
            ["results", "--csv"],
        ):
            t = time_command(home, cmd, args.repeat + 1)
            rows.append((" ".join(cmd), t[0], min(t[1:]), statistics.median(t[1:])))
        print(json.dumps({"runs": total}))
        print(f"{'command':<50} {'first s':>8} {'min s':>7} {'median s':>9}")
        for cmd, first, best, med in rows:
            print(f"mlxd {cmd:<45} {first:>8.3f} {best:>7.3f} {med:>9.3f}")


if __name__ == "__main__":
    main()
