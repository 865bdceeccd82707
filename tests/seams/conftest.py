"""The seams' shared catalog: ONE real daemon runs one job of every kind, in sequence, in one
queue, once per session and backend; the reader matrix (test_readers.py) then reads it.

After each job a trivial job (a 1 MiB bandwidth probe) is submitted behind it and must start
within seconds (a wedged daemon leaves it queued), `catalog.db-wal` is watched the whole time
(its deletion under the daemon is what wedged it after a push), and `doctor` must agree at the
end. On PostgreSQL (MLXD_TEST_DATABASE_URL) the same fill runs against a fresh database.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ENV_TEST_DATABASE_URL, PG_SKIP, fresh_database
from tests.hubstub import Hub

ENV_DB = "MLXD_DATABASE_URL"
HUB_REPO = "org/tiny"
PUSH_REPO = "me/tiny-4bit"
# How long a trivial job may wait to start behind a finished one (a busy 2-core machine).
START_WITHIN_S = 15
JOB_WITHIN_S = 240  # each job of the fill takes seconds; a wedged queue never ends
BENCH = ("-p", "16", "-g", "4", "-n", "2", "--warmup", "0")
# `system probe` runs in the CLI: the trivial job goes through the queue by the same submit
# function the commands call.
PROBE = (
    "import click; from mlxd.cli.submit import submit; from mlxd.jobs.probe import Spec; "
    "click.Context(click.Command('probe')).invoke(submit, 'probe', Spec(size_mb=1, repeats=1))"
)


@dataclass
class Fill:
    """What the fill made: where, on which backend, and the names the readers look for."""

    backend: str
    home: Path
    env: dict[str, str]
    jobs: dict[str, int] = field(default_factory=dict)  # step -> job id
    kinds: list[str] = field(default_factory=list)  # job kinds run, in order
    start_delays: dict[str, float] = field(default_factory=dict)  # step -> probe start (s)
    wal_events: list[str] = field(default_factory=list)
    adapter: str = ""  # the first adapter the fine-tuning grid made
    _json: dict[tuple[str, ...], object] = field(default_factory=dict)
    seconds: float = 0.0

    def run(self, *args: str, check: bool = True, timeout: float = 300):
        proc = subprocess.run(
            [sys.executable, "-m", "mlxd", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"mlxd {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def python(self, code: str):
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=self.env, timeout=60
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    def json(self, *args: str):
        return json.loads(self.run(*args, "--json").stdout)

    def json_once(self, *args: str):
        """``json`` remembered: the readers ask each --json once (the catalog no longer
        changes once the fill is done)."""
        if args not in self._json:
            self._json[args] = self.json(*args)
        return self._json[args]


class WalWatch(threading.Thread):
    """Notes every moment catalog.db-wal is missing or was replaced while the daemon runs."""

    def __init__(self, home: Path):
        super().__init__(daemon=True)
        self.wal = home / "catalog.db-wal"
        self.events: list[str] = []
        self.inode: int | None = None
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(0.05):
            try:
                inode = self.wal.stat().st_ino
            except FileNotFoundError:
                if self.inode is not None and (not self.events or "deleted" not in self.events[-1]):
                    self.events.append(f"catalog.db-wal deleted at {time.strftime('%X')}")
                continue
            if self.inode is not None and inode != self.inode:
                self.events.append(f"catalog.db-wal replaced at {time.strftime('%X')}")
            self.inode = inode

    def stop(self) -> list[str]:
        self.stop_event.set()
        self.join(5)
        return self.events


def _job_id(proc) -> int:
    """The last job a submit queued (a hub id or a sweep queues several)."""
    found = re.findall(r"(?:Queued job|Job|quantize|bench|quality|eval) (\d+)", proc.stdout)
    assert found, proc.stdout + proc.stderr
    return max(int(x) for x in found)


def _write_gguf(path: Path) -> Path:
    """A tiny float llama GGUF (the GGUF tests' own writer)."""
    import mlx.core as mx

    from tests.test_gguf import (
        _hf_weights,
        _llama_metadata,
        _mx_metadata,
        _to_gguf,
        _tokenizer_metadata,
        _train_tokenizer,
    )

    tok_md = _tokenizer_metadata(_train_tokenizer())
    vocab = len(tok_md["tokenizer.ggml.tokens"])
    weights = {k: mx.array(v) for k, v in _to_gguf(_hf_weights(vocab)).items()}
    mx.save_gguf(str(path), weights, _mx_metadata({**_llama_metadata(vocab), **tok_md}))
    return path


def _fill(fill: Fill, root: Path, hub: Hub, watch: WalWatch | None) -> None:
    from tests.test_finetune import data_folder

    probes: dict[str, int] = {}

    def step(name: str, kind: str, *args: str) -> int:
        # --wait follows the job to its end; a wedged daemon leaves it queued forever, so the
        # follow gives up after a few minutes, saying why.
        try:
            proc = fill.run(*args, "--wait", check=False, timeout=JOB_WITHIN_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{name} did not end within {JOB_WITHIN_S} s; "
                f"wal: {watch.events if watch else '-'}\n"
                + fill.run("jobs", "list", "--limit", "5").stdout
            ) from None
        assert proc.returncode == 0, f"{name}: {proc.stdout}{proc.stderr}"
        job = fill.jobs[name] = _job_id(proc)
        fill.kinds.append(kind)
        # A trivial job behind it: when it started is judged at the end (start_delays).
        probes[name] = _job_id(fill.python(PROBE))
        if watch is not None:
            assert not watch.events, f"after {name}: {watch.events}"
        return job

    # synth runs in the CLI (a foreground job); everything else goes through the daemon.
    fill.run("models", "synth", "tiny", "--seed", "0")
    fill.kinds.append("synth")
    step("pull", "download", "pull", HUB_REPO, "--name", "hubtiny")
    step("convert", "convert", "convert", "tiny", "--name", "tiny-mlx")
    step("quantize", "quantize", "quantize", "tiny-mlx", "--bits", "4", "--name", "tiny-q4")
    step("bench", "bench", "bench", "tiny", *BENCH)
    step("bench_q4", "bench", "bench", "tiny-q4", *BENCH)
    step("quality", "quality", "quality", "tiny-q4", "--base", "tiny", "--text-tokens", "64")
    step(
        "eval",
        "eval",
        "eval",
        "tiny-q4",
        "--base",
        "tiny",
        "--task",
        "capitals,arithmetic",
        "--limit",
        "4",
    )
    sweep_args = ("-p", "16", "-g", "4", "-n", "2", "--warmup", "0", "--text-tokens", "64")
    # Two methods: a learned one (AWQ, on a little calibration) beside round-to-nearest, so
    # the method's label and lineage cross every reader; its variant is evaluated too.
    step(
        "sweep",
        "sweep",
        *("sweep", "tiny", "--bits", "8", "--method", "rtn,awq", *sweep_args),
        *("--calibration-samples", "2", "--calibration-length", "32"),
        *("--eval", "capitals", "--eval-limit", "2"),
    )
    data = data_folder(root / "data")
    # a grid of two runs (a fine-tuning sweep: `finetune list` / `show` have rows)
    step(
        "finetune",
        "finetune",
        *("finetune", "tiny", "--data", str(data), "--iters", "4", "--batch-size", "2"),
        *("--learning-rate", "1e-2,5e-3", "--num-layers", "2", "--steps-per-report", "2"),
        *("--steps-per-eval", "2", "--save-every", "2"),
    )
    adapter = fill.adapter = fill.json("adapters", "list")[0]["name"]
    step("fuse", "fuse", "fuse", "tiny", "--adapter", adapter, "--name", "tiny-fact")
    step("bench_adapter", "bench_pair", "bench", "tiny", "--adapter", adapter, *BENCH)
    step(
        "bench_draft",
        "bench_pair",
        *("bench", "tiny", "--draft-model", "tiny", "--num-draft-tokens", "2"),
        *("-p", "16", "-g", "6", "-n", "1", "--warmup", "0"),
    )
    prefix = "The river in winter is cold and slow. " * 8
    step(
        "cache_prompt",
        "cache_prompt",
        "cache-prompt",
        "tiny",
        "--prompt",
        prefix,
        "--name",
        "river",
    )
    step("bench_cache", "bench_pair", "bench", "tiny", "--prompt-cache", "river", *BENCH)
    step(
        "bench_serve",
        "serve_bench",
        *("bench", "tiny", "--serve", "--concurrency", "1,2", "--requests", "2"),
        *("-p", "16", "-g", "4"),
    )
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(f"Tell me about item {i}") + "\n" for i in range(4)))
    out = root / "batch-out.jsonl"
    step(
        "batch",
        "batch",
        "batch",
        "tiny",
        "--prompts",
        str(prompts),
        "-o",
        str(out),
        "--max-tokens",
        "4",
        "-b",
        "2",
    )
    step("push", "push", "push", "tiny-q4", PUSH_REPO, "--allow-synthetic")
    assert PUSH_REPO in hub.repos
    gguf = _write_gguf(root / "tiny.gguf")
    step("import_gguf", "import_gguf", "models", "import-gguf", str(gguf), "--name", "gtiny")
    # the last probe ends before the readers look
    last = fill.run("jobs", "wait", str(probes["import_gguf"]), "--wait-timeout", "60")
    assert last.returncode == 0, last.stdout + last.stderr
    fill.kinds.append("probe")
    jobs = {j["id"]: j for j in fill.json("jobs", "list", "--limit", "1000")}
    for name, probe in probes.items():
        ended = _ts(jobs[fill.jobs[name]]["finished_at"])
        began = _ts(jobs[probe]["started_at"])
        fill.start_delays[name] = max(
            0.0, (began - max(ended, _ts(jobs[probe]["submitted_at"]))).total_seconds()
        )
    slow = {k: v for k, v in fill.start_delays.items() if v > START_WITHIN_S}
    assert not slow, f"a trivial job waited behind these jobs (s): {slow}"


def _ts(text: str):
    from datetime import UTC, datetime

    dt = datetime.fromisoformat(text)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def filled_catalog(request, tmp_path_factory, tiny_model_dir):
    """A catalog filled by one real job of every kind, run in sequence by one daemon."""

    backend = request.param
    # MLXD_SEAMS_KEEP=DIR keeps the filled home in DIR/BACKEND and reuses it on the next
    # run (for editing the readers' checks; the fill's own checks ran when it was made).
    keep = os.environ.get("MLXD_SEAMS_KEEP")
    root = Path(keep) / backend if keep else tmp_path_factory.mktemp(f"filled-{backend}")
    home = root / "mlxd-home"
    kept = root / "fill.json"
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLXD_", "HF_"))}
    drop = None
    if backend == "postgresql":
        base = os.environ.get(ENV_TEST_DATABASE_URL)
        if not base:
            pytest.skip(PG_SKIP)
        if kept.exists():
            url = json.loads(kept.read_text())["url"]
        else:
            url, drop = fresh_database(base)
        env["MLXD_DATABASE_URL"] = url
        if keep:
            drop = None  # kept for the next run
    hub = Hub().start()
    hub.add_repo(HUB_REPO, folder=tiny_model_dir)
    env.update(
        MLXD_HOME=str(home),
        HF_HOME=str(root / "hf-home"),
        HF_HUB_OFFLINE="0",
        HF_ENDPOINT=hub.url,
        HF_TOKEN=hub.allowed_token,
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
    )
    fill = Fill(backend, home, env)
    daemon = _EnvDaemon(home, env)
    watch = None
    t0 = time.monotonic()
    try:
        daemon.start()
        if kept.exists():
            for k, v in json.loads(kept.read_text()).items():
                if k != "url":
                    setattr(fill, k, v)
            yield fill
            return
        if backend == "sqlite":
            watch = WalWatch(home)
            watch.start()
        _fill(fill, root, hub, watch)
        fill.seconds = time.monotonic() - t0
        if watch is not None:
            fill.wal_events = watch.stop()
        if keep:
            saved = ("jobs", "kinds", "start_delays", "wal_events", "seconds", "adapter")
            kept.write_text(
                json.dumps({k: getattr(fill, k) for k in saved} | {"url": env.get(ENV_DB)})
            )
        yield fill
    finally:
        if watch is not None:
            watch.stop()
        daemon.stop()
        hub.stop()
        if drop is not None:
            drop()


class _EnvDaemon:
    """The conftest Daemon with this fill's environment (hub online, its own database)."""

    def __init__(self, home: Path, env: dict[str, str]):
        from tests.conftest import Daemon

        self.inner = Daemon(home)
        self.env = env

    def start(self):
        from tests import conftest

        old = conftest.mlxd_env
        conftest.mlxd_env = lambda home: dict(self.env)
        try:
            return self.inner.start(timeout=60)
        finally:
            conftest.mlxd_env = old

    def stop(self):
        return self.inner.stop()
