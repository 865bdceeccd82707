"""The performance harness (`make bench`): mlxd against mlx-lm on one model, interleaved.

In one process group, on one synth model made in a temporary MLXD_HOME and the same settings,
it runs round after round (the order rotates each round):

  A. mlxd's bench job through a real daemon (`mlxd bench ... --wait`);
  B. `python -m mlx_lm.benchmark` (mlx-lm's own benchmark script, its own process);
  C. a direct `stream_generate` loop in its own process (this file, `--direct-loop`);

then prints, against the targets of issue 3, the ratio of mlxd's tok/s to mlx-lm's, the
daemon's overhead per job, submit-to-start latency with an idle daemon, and the latency of
`mlxd results --json` on a catalog of 100,000 benchmark runs. The figures also go to
benchmarks/last-run.json. Nothing here touches the network or the user's MLXD_HOME.

    .venv/bin/python benchmarks/run.py [--rounds 4] [-p 128] [-g 128] [-n 3] [--no-spare]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
MODEL = "bench-small"
RATIO_RANGE = (0.97, 1.03)
OVERHEAD_TARGET_S = 1.5
START_TARGET_S = 0.3
RESULTS_TARGET_S = 0.3


# -- C: the direct stream_generate loop (runs as its own process) ---------------------------


def direct_loop(path: str, prompt_tokens: int, gen_tokens: int, trials: int) -> dict[str, Any]:
    """Load, warm up once, then time `trials` stream_generate runs; mean tok/s figures."""
    import mlx.core as mx
    import numpy as np
    from mlx_lm import load, stream_generate

    model, tokenizer = load(path)
    tokenizer._eos_token_ids = set()  # like mlx_lm.benchmark: generate every token asked for
    rng = np.random.default_rng(0)
    vocab = len(tokenizer.get_vocab())
    special = set(tokenizer.all_special_ids)
    pool = np.array([i for i in range(vocab) if i not in special])
    prompt = rng.choice(pool, size=prompt_tokens).tolist()
    runs = []
    for i in range(trials + 1):
        mx.reset_peak_memory()
        tic = time.perf_counter()
        first = None
        for response in stream_generate(model, tokenizer, prompt, max_tokens=gen_tokens):
            if first is None and response.generation_tokens >= 1:
                first = time.perf_counter()
        end = time.perf_counter()
        if i == 0:
            continue  # warm-up
        runs.append(
            {
                "prompt_tps": response.prompt_tps,
                "generation_tps": response.generation_tps,
                # Our own clock as a cross-check of mlx-lm's counters.
                "wall_generation_tps": (response.generation_tokens - 1) / (end - first),
                "total_s": end - tic,
            }
        )
    return {k: statistics.fmean(r[k] for r in runs) for k in runs[0]}


# -- helpers ----------------------------------------------------------------------------------


def mlxd(home: Path, *args: str, check: bool = True, timeout: float = 600):
    env = dict(os.environ, MLXD_HOME=str(home), HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [PY, "-m", "mlxd", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=REPO,
    )
    if check and proc.returncode != 0:
        raise SystemExit(f"mlxd {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def job_id_of(stdout: str) -> int:
    m = re.search(r"Queued job (\d+)", stdout)
    if not m:
        raise SystemExit(f"no job id in: {stdout!r}")
    return int(m.group(1))


def epoch(value: str | None) -> float | None:
    """A catalog timestamp (UTC, stored without zone) as seconds since the epoch."""
    if value is None:
        return None
    dt = datetime.fromisoformat(value)
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def job_row(home: Path, job_id: int) -> dict[str, Any]:
    con = sqlite3.connect(f"file:{home / 'catalog.db'}?mode=ro", uri=True, timeout=30)
    con.row_factory = sqlite3.Row
    try:
        row = con.execute("select * from job where id = ?", (job_id,)).fetchone()
        return dict(row) if row else {}
    finally:
        con.close()


def bench_runs(home: Path, job_id: int) -> list[dict[str, Any]]:
    con = sqlite3.connect(f"file:{home / 'catalog.db'}?mode=ro", uri=True, timeout=30)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute("select * from benchrun where job_id = ?", (job_id,))]
    finally:
        con.close()


def child_work_s(home: Path, job_id: int) -> float | None:
    """The child's own work (after its imports), from the timing line the daemon logs."""
    text = (home / "logs" / f"job-{job_id}.log").read_text()
    found = re.findall(
        r"=== child \d+ \((\w+)\): imports ([\d.]+) s, idle ([\d.]+) s, "
        r"work ([\d.]+) s",
        text,
    )
    return float(found[-1][3]) if found else None


def child_kind(home: Path, job_id: int) -> str | None:
    text = (home / "logs" / f"job-{job_id}.log").read_text()
    m = re.findall(r"=== child \d+ \((\w+)\)", text)
    return m[-1] if m else None


class Daemon:
    """`mlxd daemon start --foreground` as a child of this process (same process group)."""

    def __init__(self, home: Path, spare: bool):
        self.home = home
        env = dict(os.environ, MLXD_HOME=str(home), HF_HUB_OFFLINE="1")
        if not spare:
            env["MLXD_SPARE_CHILD"] = "0"
        self.log = open(home.parent / "daemon-stdio.log", "a")
        self.proc = subprocess.Popen(
            [PY, "-m", "mlxd", "daemon", "start", "--foreground"],
            env=env,
            stdout=self.log,
            stderr=self.log,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
        )
        pidfile = home / "daemon.pid"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit("the daemon exited at start; see " + self.log.name)
            if pidfile.exists() and pidfile.read_text().strip() == str(self.proc.pid):
                return
            time.sleep(0.05)
        raise SystemExit("the daemon did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# -- the measurements -------------------------------------------------------------------------


def run_mlxd_bench(home: Path, p: int, g: int, n: int) -> dict[str, Any]:
    """A: one bench job through the daemon; tok/s from the catalog, overhead from the clock."""
    t0 = time.time()
    out = mlxd(
        home, "bench", MODEL, "-p", str(p), "-g", str(g), "-n", str(n), "--warmup", "1", "--wait"
    )
    t1 = time.time()
    job_id = job_id_of(out.stdout)
    job = job_row(home, job_id)
    runs = bench_runs(home, job_id)
    work = child_work_s(home, job_id)
    submitted, finished = epoch(job["submitted_at"]), epoch(job["finished_at"])
    return {
        "job_id": job_id,
        "child": child_kind(home, job_id),
        "prompt_tps": runs[0]["prompt_tps_mean"],
        "generation_tps": runs[0]["generation_tps_mean"],
        "wall_s": t1 - t0,
        "work_s": work,
        # What a user waits beyond the work: CLI start-up, queue, child start, recording, --wait.
        "overhead_s": (t1 - t0) - work if work is not None else None,
        # The daemon's part alone, from the catalog's own timestamps.
        "daemon_overhead_s": (finished - submitted) - work if work is not None else None,
    }


def run_mlx_lm_benchmark(path: Path, p: int, g: int, n: int) -> dict[str, Any]:
    """B: mlx-lm's own benchmark script, in its own process."""
    cmd = [
        PY,
        "-m",
        "mlx_lm.benchmark",
        "--model",
        str(path),
        "-p",
        str(p),
        "-g",
        str(g),
        "-n",
        str(n),
    ]
    t0 = time.time()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ, HF_HUB_OFFLINE="1")
    )
    wall = time.time() - t0
    m = re.search(r"Averages: prompt_tps=([\d.]+), generation_tps=([\d.]+)", proc.stdout)
    if proc.returncode != 0 or not m:
        raise SystemExit(f"mlx_lm.benchmark failed: {proc.stdout[-500:]} {proc.stderr[-2000:]}")
    return {"prompt_tps": float(m.group(1)), "generation_tps": float(m.group(2)), "wall_s": wall}


def run_direct_loop(path: Path, p: int, g: int, n: int) -> dict[str, Any]:
    """C: a plain stream_generate loop, in its own process."""
    cmd = [PY, __file__, "--direct-loop", str(path), str(p), str(g), str(n)]
    t0 = time.time()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ, HF_HUB_OFFLINE="1")
    )
    if proc.returncode != 0:
        raise SystemExit(f"direct loop failed: {proc.stderr[-2000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "wall_s": time.time() - t0}


def submit_to_start(home: Path, jobs: int, idle_s: float) -> list[dict[str, Any]]:
    """Latency from submitting a job to its claim (started_at) and to its first progress.

    Each job is a tiny bench submitted to an idle daemon (the previous job done, then
    `idle_s` of quiet so that a spare child has finished its imports). The catalog is polled
    from the moment `mlxd bench` starts, since the job often runs before the command exits.
    """
    env = dict(os.environ, MLXD_HOME=str(home), HF_HUB_OFFLINE="1")
    out = []
    for _ in range(jobs):
        time.sleep(idle_s)
        last_id = max_job_id(home)
        cli = subprocess.Popen(
            [PY, "-m", "mlxd", "bench", MODEL, "-p", "8", "-g", "2", "-n", "1", "--warmup", "0"],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        returned = progressed = None
        job: dict[str, Any] = {}
        deadline = time.time() + 120
        while time.time() < deadline:
            if returned is None and cli.poll() is not None:
                returned = time.time()
            job = newest_job(home, last_id)
            done = job.get("status") in ("succeeded", "failed", "cancelled")
            if (
                job
                and progressed is None
                and (job.get("message") not in (None, "starting", "started") or done)
            ):
                progressed = time.time()
            if done and returned is not None:
                break
            time.sleep(0.005)
        if job.get("status") != "succeeded":
            raise SystemExit(f"latency job {job.get('id')} {job.get('status')}: {job.get('error')}")
        submitted, started = epoch(job["submitted_at"]), epoch(job["started_at"])
        out.append(
            {
                "job_id": job["id"],
                "child": child_kind(home, job["id"]),
                "submitted_to_started_s": started - submitted,
                "submitted_to_first_progress_s": progressed - submitted,
                # Negative when the job was already running as the command exited.
                "returned_to_started_s": started - returned,
                "returned_to_first_progress_s": progressed - returned,
            }
        )
    return out


def max_job_id(home: Path) -> int:
    con = sqlite3.connect(f"file:{home / 'catalog.db'}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute("select coalesce(max(id), 0) from job").fetchone()[0]
    finally:
        con.close()


def newest_job(home: Path, after_id: int) -> dict[str, Any]:
    con = sqlite3.connect(f"file:{home / 'catalog.db'}?mode=ro", uri=True, timeout=30)
    con.row_factory = sqlite3.Row
    try:
        row = con.execute("select * from job where id > ? order by id limit 1", (after_id,))
        row = row.fetchone()
        return dict(row) if row else {}
    finally:
        con.close()


def results_latency(n_runs: int, repeats: int) -> dict[str, Any]:
    """`mlxd results --json` wall time on a catalog filled with n_runs benchmark runs."""
    try:
        sys.path.insert(0, str(REPO / "benchmarks"))
        from fill_catalog import fill_results
    except ImportError:
        return {"skipped": "benchmarks/fill_catalog.py (fill_results) is not there"}
    with tempfile.TemporaryDirectory(prefix="mlxd-bench-results-") as tmp:
        home = Path(tmp) / "mlxd-home"
        t0 = time.perf_counter()
        total = fill_results(home, n_runs)
        fill_s = time.perf_counter() - t0
        env = dict(os.environ, MLXD_HOME=str(home))
        times = []
        with tempfile.TemporaryFile() as sink:
            for _ in range(repeats):
                sink.seek(0)
                sink.truncate()
                t0 = time.perf_counter()
                subprocess.run(
                    [PY, "-m", "mlxd", "results", "--json"],
                    env=env,
                    stdout=sink,
                    check=True,
                    timeout=600,
                    cwd=REPO,
                )
                times.append(time.perf_counter() - t0)
            size = sink.tell()
    return {
        "runs": total,
        "fill_s": fill_s,
        "times_s": times,
        "median_s": statistics.median(times),
        "best_s": min(times),
        "output_bytes": size,
    }


# -- the report -------------------------------------------------------------------------------


def median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def cv(values) -> float | None:
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return None
    return statistics.stdev(values) / statistics.fmean(values)


def verdict(value: float | None, ok, noise: float | None = None) -> str:
    if value is None:
        return "n/a"
    if ok(value):
        return "PASS"
    # A miss inside the run-to-run noise says little: say so instead of a bare MISS.
    return f"MISS (rounds vary {noise:.0%})" if noise and noise > 0.03 else "MISS"


def report(figures: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    lo, hi = RATIO_RANGE
    in_range = lambda v: lo <= v <= hi  # noqa: E731
    rows = []

    def add(name, value, fmt, target, ok=None, noise=None):
        shown = "n/a" if value is None else format(value, fmt)
        rows.append((name, shown, target, verdict(value, ok, noise) if ok else ""))

    add(
        "generation tok/s, mlxd / mlx-lm",
        figures["ratio_generation"],
        ".3f",
        f"{lo}-{hi}",
        in_range,
        figures["ratio_generation_round_cv"],
    )
    add(
        "prompt tok/s, mlxd / mlx-lm",
        figures["ratio_prompt"],
        ".3f",
        f"{lo}-{hi}",
        in_range,
        figures["ratio_prompt_round_cv"],
    )
    add(
        "generation tok/s, direct loop / mlx-lm",
        figures["ratio_generation_direct"],
        ".3f",
        "(info)",
    )
    add("prompt tok/s, direct loop / mlx-lm", figures["ratio_prompt_direct"], ".3f", "(info)")
    add(
        "daemon overhead per job, s (submitted_at to finished_at - work)",
        figures["daemon_overhead_s"],
        ".3f",
        f"< {OVERHEAD_TARGET_S}",
        lambda v: v < OVERHEAD_TARGET_S,
    )
    add(
        "  user-visible: 'mlxd bench --wait' wall - work, s", figures["overhead_s"], ".3f", "(info)"
    )
    add(
        "submitted to first progress, idle daemon, s",
        figures["start_first_progress_s"],
        ".3f",
        f"< {START_TARGET_S}",
        lambda v: v < START_TARGET_S,
    )
    add("  submitted to started_at (claimed), s", figures["start_started_at_s"], ".3f", "(info)")
    add(
        "  'mlxd bench' returned to first progress, s",
        figures["start_returned_to_first_progress_s"],
        ".3f",
        "(info)",
    )
    add(
        f"mlxd results --json, {figures['results_rows']:,} runs, s",
        figures["results_s"],
        ".3f",
        f"< {RESULTS_TARGET_S}",
        lambda v: v < RESULTS_TARGET_S,
    )
    return rows


def print_table(rows) -> None:
    headers = ("metric", "value", "target", "")
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(4)]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True))  # noqa: E731
    print(line(headers).rstrip())
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r).rstrip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("-p", "--prompt-tokens", type=int, default=128)
    ap.add_argument("-g", "--gen-tokens", type=int, default=128)
    ap.add_argument("-n", "--trials", type=int, default=3)
    ap.add_argument("--size", default="small", help="synth model size (tiny|small|base)")
    ap.add_argument("--latency-jobs", type=int, default=4)
    ap.add_argument("--results-rows", type=int, default=100_000)
    ap.add_argument("--no-spare", action="store_true", help="daemon without its spare child")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "last-run.json")
    args = ap.parse_args()
    p, g, n = args.prompt_tokens, args.gen_tokens, args.trials

    started = time.time()
    with tempfile.TemporaryDirectory(prefix="mlxd-bench-") as tmp:
        home = Path(tmp) / "mlxd-home"
        print(f"making synth model '{MODEL}' ({args.size}) in {home}", file=sys.stderr)
        mlxd(home, "models", "synth", MODEL, "--size", args.size)
        path = home / "models" / MODEL
        daemon = Daemon(home, spare=not args.no_spare)
        try:
            print("submit-to-start latency on an idle daemon", file=sys.stderr)
            latency = submit_to_start(home, args.latency_jobs + 1, idle_s=2.0)
            tools = {
                "mlxd": lambda: run_mlxd_bench(home, p, g, n),
                "mlx_lm": lambda: run_mlx_lm_benchmark(path, p, g, n),
                "direct": lambda: run_direct_loop(path, p, g, n),
            }
            order = list(tools)
            rounds: dict[str, list[dict[str, Any]]] = {k: [] for k in tools}
            for r in range(args.rounds):
                for name in order[r % 3 :] + order[: r % 3]:  # rotate: no tool always first
                    res = tools[name]()
                    rounds[name].append(res)
                    print(
                        f"round {r + 1} {name:6} prompt {res['prompt_tps']:8.1f} tok/s  "
                        f"gen {res['generation_tps']:8.1f} tok/s  wall {res['wall_s']:.2f} s",
                        file=sys.stderr,
                    )
        finally:
            daemon.stop()
    print(f"mlxd results --json on {args.results_rows:,} runs", file=sys.stderr)
    results = results_latency(args.results_rows, repeats=3)

    med = {
        k: {m: median(r[m] for r in v) for m in ("prompt_tps", "generation_tps")}
        for k, v in rounds.items()
    }
    # The first latency job after the daemon starts (its spare may still be importing): apart.
    warm_latency = latency[1:]
    figures = {
        "ratio_generation": med["mlxd"]["generation_tps"] / med["mlx_lm"]["generation_tps"],
        "ratio_prompt": med["mlxd"]["prompt_tps"] / med["mlx_lm"]["prompt_tps"],
        # How much the per-round ratios (mlxd and mlx-lm run back to back) scatter.
        "ratio_generation_round_cv": cv(
            a["generation_tps"] / b["generation_tps"]
            for a, b in zip(rounds["mlxd"], rounds["mlx_lm"], strict=True)
        ),
        "ratio_prompt_round_cv": cv(
            a["prompt_tps"] / b["prompt_tps"]
            for a, b in zip(rounds["mlxd"], rounds["mlx_lm"], strict=True)
        ),
        "ratio_generation_direct": med["direct"]["generation_tps"]
        / med["mlx_lm"]["generation_tps"],
        "ratio_prompt_direct": med["direct"]["prompt_tps"] / med["mlx_lm"]["prompt_tps"],
        "overhead_s": median(r["overhead_s"] for r in rounds["mlxd"]),
        "daemon_overhead_s": median(r["daemon_overhead_s"] for r in rounds["mlxd"]),
        "start_first_progress_s": median(x["submitted_to_first_progress_s"] for x in warm_latency),
        "start_started_at_s": median(x["submitted_to_started_s"] for x in warm_latency),
        "start_returned_to_first_progress_s": median(
            x["returned_to_first_progress_s"] for x in warm_latency
        ),
        "results_rows": results.get("runs", args.results_rows),
        "results_s": results.get("median_s"),
    }
    rows = report(figures)
    print()
    print(
        f"mlxd vs mlx-lm: {MODEL} ({args.size}, float32, synth), -p {p} -g {g} -n {n}, "
        f"{args.rounds} interleaved rounds, medians; spare child "
        f"{'off' if args.no_spare else 'on'}"
    )
    print_table(rows)
    cvs = {k: round(cv(r["generation_tps"] for r in v) or 0, 3) for k, v in rounds.items()}
    print(f"generation tok/s across rounds, coefficient of variation: {cvs}")
    if "skipped" in results:
        print(f"note: results latency not measured: {results['skipped']}")
    print(
        f"first job after daemon start: submit to first progress "
        f"{latency[0]['submitted_to_first_progress_s']:.3f} s"
    )
    print(f"harness ran {time.time() - started:.0f} s")

    record = {
        "when": datetime.now(UTC).isoformat(),
        "settings": {
            "model_size": args.size,
            "prompt_tokens": p,
            "gen_tokens": g,
            "trials": n,
            "rounds": args.rounds,
            "spare_child": not args.no_spare,
        },
        "figures": figures,
        "table": [
            dict(zip(("metric", "value", "target", "verdict"), r, strict=True)) for r in rows
        ],
        "medians": med,
        "rounds": rounds,
        "latency": latency,
        "results_latency": results,
    }
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--direct-loop":
        _, _, model_path, p_, g_, n_ = sys.argv
        print(json.dumps(direct_loop(model_path, int(p_), int(g_), int(n_))))
    else:
        main()
