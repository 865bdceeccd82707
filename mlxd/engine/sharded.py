"""A benchmark of one model sharded over several ranks (tensor parallel), under mlx.launch.

:func:`bench_sharded` starts ``mlx.launch -n RANKS [--hostfile FILE] --backend BACKEND --
python -m mlxd.engine.sharded ...``; every rank loads its shard with mlx-lm's
``sharded_load``, generates the same tokens in lockstep, and prints one JSON line with its
own tok/s and peak memory. mlx's ring backend runs two ranks over 127.0.0.1 on one CPU
machine; on Macs a hostfile names the machines (Thunderbolt or Ethernet).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

RESULT_TAG = "MLXD_SHARD_RESULT "


@dataclass
class RankResult:
    rank: int
    ranks: int
    host: str
    prompt_tps: float
    generation_tps: float
    peak_memory_bytes: int
    load_time_s: float


@dataclass
class ShardedResult:
    """One sharded run: tok/s as rank 0 saw it (all ranks step together), each rank's peak."""

    ranks: int
    backend: str
    prompt_tokens: int
    gen_tokens: int
    prompt_tps: float
    generation_tps: float
    per_rank: list[RankResult] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


class ShardedError(RuntimeError):
    """mlx.launch or a rank failed; the message is one line."""


def launcher() -> str:
    found = shutil.which("mlx.launch") or str(Path(sys.executable).with_name("mlx.launch"))
    if not Path(found).exists():
        raise ShardedError("mlx.launch is not installed next to this Python (pip install mlx)")
    return found


def bench_sharded(
    model_path: str | os.PathLike,
    *,
    ranks: int = 2,
    prompt_tokens: int = 64,
    gen_tokens: int = 32,
    backend: str = "ring",
    hostfile: str | None = None,
    seed: int = 0,
    timeout_s: float = 600,
) -> ShardedResult:
    """Run the sharded benchmark; one rank is the plain (unsharded) run for comparison."""
    rank_cmd = [
        sys.executable,
        "-m",
        "mlxd.engine.sharded",
        str(model_path),
        str(prompt_tokens),
        str(gen_tokens),
        str(seed),
    ]
    if ranks == 1 and not hostfile:
        cmd = rank_cmd  # one rank: the plain run, no launcher
    else:
        cmd = [launcher()]
        cmd += ["--hostfile", hostfile] if hostfile else ["-n", str(ranks)]
        cmd += ["--backend", backend, "--", *rank_cmd]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ShardedError(f"the sharded run took longer than {timeout_s:g} s") from None
    per_rank = []
    for line in proc.stdout.splitlines():
        if RESULT_TAG in line:
            per_rank.append(RankResult(**json.loads(line.split(RESULT_TAG, 1)[1])))
    if proc.returncode != 0 or not per_rank or (not hostfile and len(per_rank) != ranks):
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ShardedError(f"mlx.launch exited {proc.returncode}: {tail}")
    per_rank.sort(key=lambda r: r.rank)
    first = per_rank[0]
    return ShardedResult(
        ranks=first.ranks,
        backend=backend,
        prompt_tokens=prompt_tokens,
        gen_tokens=gen_tokens,
        prompt_tps=first.prompt_tps,
        generation_tps=first.generation_tps,
        per_rank=per_rank,
    )


def _rank_main(model_path: str, prompt_tokens: int, gen_tokens: int, seed: int) -> None:
    """One rank (run by mlx.launch): load the shard, warm up, measure, print a JSON line."""
    import socket
    import time

    import mlx.core as mx
    from mlx_lm.generate import stream_generate
    from mlx_lm.utils import sharded_load

    group = mx.distributed.init()
    t0 = time.perf_counter()
    if group.size() > 1:
        model, tokenizer = sharded_load(model_path, tensor_group=group)
    else:
        from mlx_lm import load

        model, tokenizer = load(model_path)
    load_time = time.perf_counter() - t0
    mx.random.seed(seed)  # the same prompt on every rank
    vocab = getattr(tokenizer, "vocab_size", None) or 256
    prompt = mx.random.randint(0, vocab, (prompt_tokens,)).tolist()

    def run(n: int):
        responses = list(stream_generate(model, tokenizer, prompt, max_tokens=n))
        return responses[-1]

    run(4)  # warm-up: the first generation in a process is several times slower
    mx.reset_peak_memory()
    last = run(gen_tokens)
    result = RankResult(
        rank=group.rank(),
        ranks=group.size(),
        host=socket.gethostname(),
        prompt_tps=float(last.prompt_tps),
        generation_tps=float(last.generation_tps),
        peak_memory_bytes=int(mx.get_peak_memory()),
        load_time_s=load_time,
    )
    print(RESULT_TAG + json.dumps(asdict(result)), flush=True)


if __name__ == "__main__":
    path, p, g, s = sys.argv[1:5]
    _rank_main(path, int(p), int(g), int(s))
