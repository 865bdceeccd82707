"""The serving benchmark: mlx_lm.server on a loopback port, driven by concurrent streaming clients.

The server runs in its own process (``python -m mlxd.engine.serving --parent PID ...``), a
thin wrapper around ``mlx_lm.server.main`` that dies with its parent: the job's child may be
killed at any moment (cancel, timeout) and the server must never outlive it.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .types import ServeLevelResult, ServeRequestResult

HEALTH_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 600.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """mlx_lm.server for one model; a context manager that always stops it."""

    def __init__(self, model_path: Path, *, log: Any = None, extra_args: list[str] | None = None):
        self.port = free_port()
        self.model_path = model_path
        argv = [
            sys.executable,
            "-m",
            "mlxd.engine.serving",
            "--parent",
            str(os.getpid()),
            "--model",
            str(model_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "WARNING",
            *(extra_args or []),
        ]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log or sys.stderr, stderr=log or sys.stderr
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = HEALTH_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlx_lm.server exited with status {self.proc.returncode}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"mlx_lm.server did not answer within {timeout:g} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stream_chat(port: int, prompt: str, max_tokens: int) -> ServeRequestResult:
    """One streaming chat completion; per-token arrival times from the SSE chunks."""
    body = {
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    arrivals: list[float] = []
    usage: dict[str, Any] = {}
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
        conn.request(
            "POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"}
        )
        resp = conn.getresponse()
        if resp.status != 200:
            return ServeRequestResult(
                error=f"HTTP {resp.status}", total_s=time.perf_counter() - start
            )
        for raw in resp:
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    arrivals.append(time.perf_counter())
        conn.close()
    except (OSError, ValueError, http.client.HTTPException) as e:
        return ServeRequestResult(
            error=f"{type(e).__name__}: {e}", total_s=time.perf_counter() - start
        )
    end = time.perf_counter()
    tokens = int(usage.get("completion_tokens") or len(arrivals))
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else 0.0
    return ServeRequestResult(
        ttft_s=arrivals[0] - start if arrivals else None,
        total_s=end - start,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        output_tokens=tokens,
        itl_s=gaps,
        tokens_per_s=(tokens - 1) / span if span > 0 and tokens > 1 else None,
        error=None if arrivals else "no tokens streamed",
    )


def run_level(
    port: int,
    prompts: list[str],
    *,
    concurrency: int,
    max_tokens: int,
    on_request: Callable[[int], None] | None = None,
) -> ServeLevelResult:
    """All prompts through ``concurrency`` clients at once, each taking the next prompt."""
    results: list[ServeRequestResult | None] = [None] * len(prompts)
    lock = threading.Lock()
    next_index = [0]

    def client() -> None:
        while True:
            with lock:
                i = next_index[0]
                next_index[0] += 1
            if i >= len(prompts):
                return
            results[i] = stream_chat(port, prompts[i], max_tokens)
            if on_request is not None:
                with lock:
                    on_request(sum(r is not None for r in results))

    start = time.perf_counter()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall_s = time.perf_counter() - start
    done = [r for r in results if r is not None]
    return ServeLevelResult(concurrency=concurrency, wall_s=wall_s, requests=done)


def load_tokenizer(path: Path) -> Any:
    """The model's tokenizer alone (the server holds the weights), as mlx-lm loads it."""
    from mlx_lm.utils import load_tokenizer as _load

    return _load(Path(path))


def prompts_of_length(tokenizer: Any, n_prompts: int, tokens: int, seed: int) -> list[str]:
    """Texts of about ``tokens`` tokens each, from ordinary words of the tokenizer's vocabulary."""
    import numpy as np

    rng = np.random.default_rng(seed)
    vocab = tokenizer.get_vocab()
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    words = [t for t, i in vocab.items() if i not in special and t.isalpha() and len(t) > 2]
    words = words or [t for t, i in vocab.items() if i not in special]
    out = []
    for _ in range(n_prompts):
        picked = rng.choice(len(words), size=tokens)
        text = " ".join(words[i] for i in picked)
        ids = tokenizer.encode(text)[:tokens]
        out.append(tokenizer.decode(ids))
    return out


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100) or None for no values."""
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _serve_main(argv: list[str]) -> None:
    """The server process: die with the parent, then hand over to mlx_lm.server."""
    parent = int(argv[argv.index("--parent") + 1])
    i = argv.index("--parent")
    argv = argv[:i] + argv[i + 2 :]
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1  # the kernel kills us the moment the parent dies
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    def watch() -> None:  # elsewhere (macOS), or if the parent died before prctl
        while True:
            if os.getppid() != parent:
                os._exit(3)
            time.sleep(0.3)

    threading.Thread(target=watch, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    from mlx_lm import server

    sys.argv = ["mlx_lm.server", *argv]
    server.main()


if __name__ == "__main__":
    _serve_main(sys.argv[1:])
