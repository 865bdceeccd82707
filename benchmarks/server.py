"""The team server's costs (issue 20), as ratios against the local CLI in one run.

    .venv/bin/python benchmarks/server.py [--runs 20] [--cli-runs 6] [--load-s 60]

In a temporary MLXD_HOME filled with 100 models, 100,000 benchmark runs (3 trials each) and
2,000 finished jobs (plain SQL, ``fill_catalog.py``), plus one real tiny model to submit
against, it starts ``mlxd serve`` (a subprocess on a free 127.0.0.1 port) and measures:

1. **Read latency**, p50/p95: ``GET /api/v1/jobs``, ``/api/v1/results`` and
   ``/api/v1/models/REF`` (and the dashboard's queue and model pages, and ``/metrics``)
   through one kept-alive HTTP client, against the same read through the local CLI
   (``mlxd jobs list --json``, ``results --json``, ``models show REF --json``: a new
   process each, as a person types it).
2. **Submit round trip**: ``POST /api/v1/jobs/quantize`` (HTTP alone), the remote CLI
   (``MLXD_URL`` + ``MLXD_TOKEN``: a new process talking to the server) against the local
   CLI (``mlxd quantize tiny --bits 8``). No daemon runs: the jobs only queue.
3. **The server's memory** (RSS, psutil): idle after start-up and the reads above, and the
   peak while ``--clients`` (default 50) clients poll the queue page and ``/api/v1/jobs``
   for ``--load-s`` seconds (the load test's traffic, ``poll`` below), with that run's
   latencies and errors.

Everything goes to stdout as a table and to ``benchmarks/last-server-run.json``. The load
generator ``poll`` is also what ``tests/server/test_server_load.py`` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable
HERE = Path(__file__).resolve().parent


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of ``values``, nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def poll(
    base_url: str,
    paths: list[str],
    *,
    clients: int = 50,
    seconds: float = 60.0,
    interval_s: float = 0.5,
    headers: dict[str, str] | None = None,
    watch_pid: int | None = None,
) -> dict:
    """``clients`` concurrent clients, each with its own connection, GETting ``paths`` in
    turn every ``interval_s`` (a dashboard's short poll; back to back when a request takes
    longer) for ``seconds``. Returns requests, errors (each 'PATH: what'), p50/p95/max
    seconds overall and per path, and with ``watch_pid`` that process's peak RSS."""
    import httpx

    latencies: dict[str, list[float]] = {p: [] for p in paths}
    errors: list[str] = []
    rss: list[int] = []
    slowest = [0.0, 0.0]  # seconds, and when it started (seconds into the run)
    begin = time.monotonic()

    async def client(i: int, deadline: float) -> None:
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as c:
            k = i
            while time.monotonic() < deadline:
                path = paths[k % len(paths)]
                k += 1
                t0 = time.perf_counter()
                try:
                    r = await c.get(path)
                    if r.status_code != 200:
                        errors.append(f"{path}: HTTP {r.status_code} {r.text[:200]}")
                except httpx.HTTPError as e:
                    errors.append(f"{path}: {type(e).__name__} {e}")
                took = time.perf_counter() - t0
                latencies[path].append(took)
                if took > slowest[0]:
                    slowest[:] = [took, time.monotonic() - took - begin]
                await asyncio.sleep(max(0.0, interval_s - took))

    async def watch(deadline: float) -> None:
        import psutil

        proc = psutil.Process(watch_pid)
        while time.monotonic() < deadline:
            rss.append(proc.memory_info().rss)
            await asyncio.sleep(0.25)

    async def run() -> None:
        deadline = time.monotonic() + seconds
        tasks = [client(i, deadline) for i in range(clients)]
        if watch_pid is not None:
            tasks.append(watch(deadline))
        await asyncio.gather(*tasks)

    asyncio.run(run())
    every = [t for ts in latencies.values() for t in ts]
    return {
        "clients": clients,
        "seconds": seconds,
        "requests": len(every),
        "errors": errors,
        "p50_s": percentile(every, 50),
        "p95_s": percentile(every, 95),
        "max_s": max(every, default=float("nan")),
        "max_started_at_s": slowest[1],
        "by_path": {
            p: {"requests": len(ts), "p50_s": percentile(ts, 50), "p95_s": percentile(ts, 95)}
            for p, ts in latencies.items()
        },
        "peak_rss_bytes": max(rss, default=None),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout_s: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout_s:g} s")


def mlxd(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([PY, "-m", "mlxd", *args], env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"mlxd {' '.join(args)}: {proc.stderr.strip() or proc.stdout}")
    return proc


def timed_cli(env: dict[str, str], args: list[str], runs: int) -> list[float]:
    """Seconds of ``mlxd ARGS`` as a new process, ``runs`` times after one warm-up."""
    out = []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        proc = subprocess.run(
            [PY, "-m", "mlxd", *[a.format(n=i) for a in args]],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        took = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"mlxd {' '.join(args)}: {proc.stderr.strip()}")
        if i:
            out.append(took)
    return out


def timed_http(client, method: str, path: str, runs: int, body=None) -> list[float]:
    out = []
    for i in range(runs + 1):
        payload = (
            None
            if body is None
            else {k: v.format(n=i) if isinstance(v, str) else v for k, v in body.items()}
        )
        t0 = time.perf_counter()
        r = client.request(method, path, json=payload)
        took = time.perf_counter() - t0
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {path}: HTTP {r.status_code} {r.text[:300]}")
        if i:
            out.append(took)
    return out


def stats(times: list[float]) -> dict:
    return {"p50_s": percentile(times, 50), "p95_s": percentile(times, 95), "n": len(times)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20, help="HTTP requests per read")
    ap.add_argument("--cli-runs", type=int, default=6, help="CLI runs per read")
    ap.add_argument("--results-runs", type=int, default=5, help="runs of the full results read")
    ap.add_argument("--load-s", type=float, default=60.0)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--out", type=Path, default=HERE / "last-server-run.json")
    args = ap.parse_args()

    from fill_catalog import fill_jobs, fill_results

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "mlxd-home"
        t0 = time.perf_counter()
        runs = fill_results(home, 100_000, families=25)
        jobs = fill_jobs(home, 2_000)
        env = dict(os.environ, MLXD_HOME=str(home), HF_HUB_OFFLINE="1")
        env.pop("MLXD_URL", None)
        env.pop("MLXD_TOKEN", None)
        mlxd(env, "models", "synth", "tiny", "--size", "tiny")
        models = len(json.loads(mlxd(env, "models", "list", "--json").stdout))
        print(
            f"catalog: {models} models, {runs} runs, {jobs} jobs ({time.perf_counter() - t0:.1f} s)"
        )
        token = mlxd(env, "users", "add", "bench", "--role", "admin").stdout.split()[0]
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with open(Path(tmp) / "server.log", "w") as log:
            server = subprocess.Popen(
                [PY, "-m", "mlxd", "serve", "--bind", f"127.0.0.1:{port}"],
                env=env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        try:
            wait_http(f"{url}/login", proc=server)
            report = measure(args, env, url, token, server.pid)
        finally:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
        report["catalog"] = {"models": models, "runs": runs, "jobs": jobs}
    show(report)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


def measure(args, env: dict[str, str], url: str, token: str, pid: int) -> dict:
    import httpx
    import psutil

    model = "fill-7-4bit-g64"
    report: dict = {"reads": {}, "submits": {}}
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=auth, timeout=120) as client:
        reads = [
            ("jobs", "/api/v1/jobs", ["jobs", "list", "--json"], args.runs, args.cli_runs),
            (
                "results",
                "/api/v1/results",
                ["results", "--json"],
                args.results_runs,
                args.results_runs,
            ),
            (
                "model",
                f"/api/v1/models/{model}",
                ["models", "show", model, "--json"],
                args.runs,
                args.cli_runs,
            ),
        ]
        for name, path, cli, n_http, n_cli in reads:
            api = timed_http(client, "GET", path, n_http)
            local = timed_cli(env, cli, n_cli)
            report["reads"][name] = {"api": stats(api), "cli": stats(local), "path": path}
        for name, path in (
            ("queue page", "/"),
            ("model page", f"/models/{model}"),
            ("metrics", "/metrics"),
        ):
            try:
                report["reads"][name] = {
                    "api": stats(timed_http(client, "GET", path, args.runs)),
                    "path": path,
                }
            except RuntimeError as e:
                report["reads"][name] = {"error": str(e), "path": path}
        body = {"model": "tiny", "bits": 8, "name": "rq{n}"}
        report["submits"]["http"] = stats(
            timed_http(client, "POST", "/api/v1/jobs/quantize", args.cli_runs, body)
        )
    remote_env = dict(env, MLXD_URL=url, MLXD_TOKEN=token)
    quantize = ["quantize", "tiny", "--bits", "8", "--name"]
    try:
        report["submits"]["remote_cli"] = stats(
            timed_cli(remote_env, [*quantize, "cq{n}"], args.cli_runs)
        )
    except RuntimeError as e:
        report["submits"]["remote_cli"] = {"error": str(e)}
    report["submits"]["local_cli"] = stats(timed_cli(env, [*quantize, "lq{n}"], args.cli_runs))
    report["rss_idle_bytes"] = psutil.Process(pid).memory_info().rss
    # The load test's traffic; the queue page only where the dashboard is built.
    paths = [
        p
        for p in ("/", "/api/v1/jobs")
        if "error" not in report["reads"].get({"/": "queue page"}.get(p, ""), {})
    ]
    load = poll(
        url,
        paths,
        clients=args.clients,
        seconds=args.load_s,
        headers=auth,
        watch_pid=pid,
    )
    load["error_count"] = len(load["errors"])
    load["errors"] = load["errors"][:10] + (
        [f"... {len(load['errors'])} in all"] if len(load["errors"]) > 10 else []
    )
    report["load"] = load
    report["rss_after_load_bytes"] = psutil.Process(pid).memory_info().rss
    return report


def show(report: dict) -> None:
    print(
        f"\n{'read':<12} {'API p50':>9} {'API p95':>9} {'CLI p50':>9} {'CLI p95':>9} {'CLI/API':>8}"
    )
    for name, r in report["reads"].items():
        if "error" in r:
            print(f"{name:<12} {r['error']}")
            continue
        api, cli = r["api"], r.get("cli")
        line = f"{name:<12} {api['p50_s']:>9.4f} {api['p95_s']:>9.4f}"
        if cli:
            line += (
                f" {cli['p50_s']:>9.4f} {cli['p95_s']:>9.4f} {cli['p50_s'] / api['p50_s']:>8.2f}"
            )
        print(line)
    s = report["submits"]
    print(f"\n{'submit':<12} {'p50 s':>9} {'p95 s':>9} {'vs local CLI':>13}")
    local = s["local_cli"]["p50_s"]
    for name in ("http", "remote_cli", "local_cli"):
        r = s[name]
        if "error" in r:
            print(f"{name:<12} {r['error']}")
            continue
        print(f"{name:<12} {r['p50_s']:>9.4f} {r['p95_s']:>9.4f} {r['p50_s'] / local:>13.2f}")
    load = report["load"]
    mb = 1024 * 1024
    print(
        f"\nserver RSS: idle {report['rss_idle_bytes'] / mb:.0f} MiB, "
        f"peak under load {(load['peak_rss_bytes'] or 0) / mb:.0f} MiB, "
        f"after {report['rss_after_load_bytes'] / mb:.0f} MiB"
    )
    print(
        f"load: {load['clients']} clients x {load['seconds']:g} s: {load['requests']} requests, "
        f"{load['error_count']} errors, p50 {load['p50_s']:.3f} s, p95 {load['p95_s']:.3f} s, "
        f"max {load['max_s']:.3f} s (started {load['max_started_at_s']:.1f} s in)"
    )
    for path, r in load["by_path"].items():
        print(
            f"  {path:<14} {r['requests']:>6} requests, p50 {r['p50_s']:.3f} s, p95 {r['p95_s']:.3f} s"
        )


if __name__ == "__main__":
    main()
