"""Pull throughput: mlxd's download job against a direct snapshot_download, interleaved.

One stand-in hub (tests/hubstub.py) on 127.0.0.1 serves a ~200 MB repo (a tiny llama's
config and tokenizer plus four ~50 MB safetensors shards). Round after round, the order
rotating:

  A. ``mlxd pull REPO`` through a real daemon: from the job's submission (its submitted_at)
     to the job marked succeeded in the catalog (every file hashed and checked, rows
     written); and from the moment the command starts (CLI start-up included);
  B. ``huggingface_hub.snapshot_download(REPO)`` in its own process, into an empty cache:
     the call itself, and the process's wall time (Python and imports included).

Each round starts from an empty HF cache for both (A's through ``mlxd models rm --files``,
the hub library's own delete). Prints the median throughputs and the ratio A / B against the
target (>= 0.9), and writes benchmarks/last-pull.json.

    .venv/bin/python benchmarks/pull.py [--rounds 3] [--shard-mb 50] [--shards 4]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.hubstub import Hub, folder_files  # noqa: E402

PY = sys.executable
REPO = "bench/pull-200mb"
TARGET = 0.9


def shard(n_bytes: int, seed: int) -> bytes:
    """A valid safetensors file holding one float32 tensor of random bytes."""
    n = n_bytes // 4
    header = json.dumps({"pad": {"dtype": "F32", "shape": [n], "data_offsets": [0, n * 4]}})
    header += " " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header.encode() + os.urandom(n * 4)


def build_repo(tmp: Path, shards: int, shard_mb: int) -> dict[str, bytes]:
    from mlxd.engine.synth import synth_model

    out = tmp / "tiny"
    synth_model(out, arch="llama", size="tiny", seed=0)
    files = folder_files(out)
    for i in range(shards):
        files[f"extra-{i:05d}-of-{shards:05d}.safetensors"] = shard(shard_mb * 10**6, i)
    return files


def job_status(db: Path, job_id: int) -> str | None:
    con = sqlite3.connect(db, timeout=30)
    try:
        row = con.execute("select status, error from job where id = ?", (job_id,)).fetchone()
    finally:
        con.close()
    if row and row[0] == "failed":
        raise RuntimeError(f"pull job failed: {row[1]}")
    return row[0] if row else None


def run_mlxd(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PY, "-m", "mlxd", *args], env=env, capture_output=True, text=True, check=True
    )


def round_mlxd(env, home: Path) -> tuple[float, float, dict[str, float]]:
    """(from the command's start, from the job's submitted_at) to succeeded in the catalog."""
    from datetime import datetime

    t0 = time.perf_counter()
    out = run_mlxd(env, "pull", REPO).stdout
    job_id = int(out.split()[2].rstrip(":"))
    while job_status(home / "catalog.db", job_id) != "succeeded":
        time.sleep(0.02)
    elapsed = time.perf_counter() - t0
    con = sqlite3.connect(home / "catalog.db", timeout=30)
    sub, fin = con.execute(
        "select submitted_at, finished_at from job where id = ?", (job_id,)
    ).fetchone()
    con.close()
    job_s = (datetime.fromisoformat(fin) - datetime.fromisoformat(sub)).total_seconds()
    # The job's own account of its time (pre-flight, transfer + verification, hashing CPU).
    log = (home / "logs" / f"job-{job_id}.log").read_text()
    m = re.search(
        r"pre-flight ([\d.]+) s, transfer and verification ([\d.]+) s "
        r"\(hashing ([\d.]+) s",
        log,
    )
    parts = (
        dict(zip(("preflight_s", "transfer_s", "hash_cpu_s"), map(float, m.groups()), strict=True))
        if m
        else {}
    )
    run_mlxd(env, "models", "rm", "pull-200mb", "--files")
    return elapsed, job_s, parts


DIRECT = """
import sys, time, json
from huggingface_hub import snapshot_download
t = time.perf_counter()
snapshot_download(sys.argv[1])
print(json.dumps({"call_s": time.perf_counter() - t}))
"""


def round_direct(env, cache: Path) -> tuple[float, float]:
    shutil.rmtree(cache, ignore_errors=True)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [PY, "-c", DIRECT, REPO],
        env=dict(env, HF_HOME=str(cache)),
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - t0
    call = json.loads(proc.stdout.strip().splitlines()[-1])["call_s"]
    shutil.rmtree(cache, ignore_errors=True)
    return call, wall


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--shard-mb", type=int, default=50)
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "last-pull.json")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="mlxd-pull-bench-"))
    hub = Hub().start()
    daemon = None
    try:
        files = build_repo(tmp, args.shards, args.shard_mb)
        total = sum(len(d) for d in files.values())
        hub.add_repo(REPO, files)
        home = tmp / "home"
        home.mkdir()
        env = dict(
            os.environ,
            MLXD_HOME=str(home),
            HF_HOME=str(tmp / "hf-mlxd"),
            HF_ENDPOINT=hub.url,
            HF_HUB_OFFLINE="0",
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
        )
        env.pop("HF_TOKEN", None)
        log = open(tmp / "daemon.log", "w")
        daemon = subprocess.Popen(
            [PY, "-m", "mlxd", "daemon", "start", "--foreground"],
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        pidfile = home / "daemon.pid"
        deadline = time.monotonic() + 60
        while not (pidfile.exists() and pidfile.read_text().strip() == str(daemon.pid)):
            if time.monotonic() > deadline or daemon.poll() is not None:
                raise RuntimeError("the daemon did not start; see " + str(tmp / "daemon.log"))
            time.sleep(0.05)
        time.sleep(3)  # let its spare child finish importing (both sides start cold on disk)

        rounds = []
        for i in range(args.rounds):
            order = ["mlxd", "direct"] if i % 2 == 0 else ["direct", "mlxd"]
            r = {"order": order}
            for side in order:
                if side == "mlxd":
                    r["mlxd_s"], r["mlxd_job_s"], parts = round_mlxd(env, home)
                    r.update(parts)
                else:
                    r["direct_call_s"], r["direct_wall_s"] = round_direct(env, tmp / "hf-direct")
            # Throughput ratios (mlxd / direct): the job (submitted -> verified) against the
            # call, and the whole command (CLI start-up included) against the whole process.
            r["ratio"] = r["direct_call_s"] / r["mlxd_job_s"]
            r["ratio_cli_vs_process"] = r["direct_wall_s"] / r["mlxd_s"]
            rounds.append(r)
            print(
                f"round {i + 1}: mlxd job {r['mlxd_job_s']:.2f} s (command {r['mlxd_s']:.2f} s), "
                f"direct call {r['direct_call_s']:.2f} s (process {r['direct_wall_s']:.2f} s), "
                f"ratio {r['ratio']:.2f}",
                flush=True,
            )

        keys = (
            "mlxd_s",
            "mlxd_job_s",
            "direct_call_s",
            "direct_wall_s",
            "ratio",
            "ratio_cli_vs_process",
        )
        med = {k: statistics.median(r[k] for r in rounds) for k in keys}
        mb = total / 1e6
        print()
        print(f"repo: {len(files)} files, {mb:.1f} MB; {args.rounds} rounds, interleaved")
        print(f"{'':44}{'median':>10}{'MB/s':>10}")
        rows = [
            ("A mlxd pull: job, submitted -> verified", med["mlxd_job_s"]),
            ("A mlxd pull: command start -> verified", med["mlxd_s"]),
            ("B snapshot_download: the call", med["direct_call_s"]),
            ("B snapshot_download: its process", med["direct_wall_s"]),
        ]
        for label, secs in rows:
            print(f"{label:44}{secs:>9.2f}s{mb / secs:>10.1f}")
        if all("transfer_s" in r for r in rounds):
            inner = {
                k: statistics.median(r[k] for r in rounds)
                for k in ("preflight_s", "transfer_s", "hash_cpu_s")
            }
            print(
                f"inside the job (medians): pre-flight {inner['preflight_s']:.2f} s, transfer "
                f"and verification {inner['transfer_s']:.2f} s, hashing {inner['hash_cpu_s']:.2f} s "
                "of CPU"
            )
        verdict = "PASS" if med["ratio"] >= TARGET else "MISS"
        print(f"throughput ratio, job / call: {med['ratio']:.2f}  target >= {TARGET}  {verdict}")
        print(f"throughput ratio, command / process: {med['ratio_cli_vs_process']:.2f}")
        args.out.write_text(
            json.dumps(
                {
                    "bytes": total,
                    "files": len(files),
                    "rounds": rounds,
                    "median": med,
                    "target": TARGET,
                },
                indent=2,
            )
            + "\n"
        )
        return 0
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                daemon.kill()
        hub.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
