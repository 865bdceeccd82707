"""Memory bandwidth of the machine, measured with MLX kernels on one large array.

Token generation reads every weight once per token, so its ceiling is memory bandwidth:
this figure lets a benchmark say how close to that roofline it ran. On the CPU backend it
measures the CPU's memory bandwidth, on Metal the unified memory as the GPU sees it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

MIB = 1 << 20


def default_size_bytes(ram_bytes: int | None) -> int:
    """An array far larger than any cache but a small share of RAM: 256 MiB to 1 GiB."""
    if not ram_bytes or ram_bytes < 8 << 30:
        return 256 * MIB
    if ram_bytes < 16 << 30:
        return 512 * MIB
    return 1024 * MIB


def measure_bandwidth(
    size_bytes: int,
    repeats: int = 10,
    warmup: int = 2,
    progress: Callable[[int, int, str], None] = lambda step, steps, what: None,
) -> dict[str, Any]:
    """Best-of-``repeats`` bandwidth of a read kernel (sum) and a copy kernel (x + 1).

    Returns ``memory_bandwidth_bytes_per_s`` (the higher of the two, what the machine can
    sustain), ``read_bytes_per_s``, ``copy_bytes_per_s``, the sizes, repeats, timings and the
    device. Bytes moved: the array once for read; read plus write (twice) for copy.
    ``progress(step, steps, what)`` hears of each step before it runs.
    """
    if size_bytes < MIB:
        raise ValueError("size_bytes must be at least 1 MiB.")
    if repeats < 1 or warmup < 0:
        raise ValueError("repeats must be at least 1 and warmup at least 0.")
    import mlx.core as mx

    steps = 1 + 2 * (warmup + repeats)
    done = 0

    def step(what: str) -> None:
        nonlocal done
        done += 1
        progress(done, steps, what)

    n = size_bytes // 4
    step(f"filling a {size_bytes // MIB} MiB array")
    x = mx.random.uniform(shape=(n,), dtype=mx.float32)
    mx.eval(x)
    nbytes = int(x.nbytes)

    def timed(op, a, name: str) -> list[float]:
        times = []
        for i in range(warmup + repeats):
            kind = (
                f"warm-up {i + 1} of {warmup}"
                if i < warmup
                else f"run {i - warmup + 1} of {repeats}"
            )
            step(f"{name}, {kind}")
            tic = time.perf_counter()
            mx.eval(op(a))
            elapsed = time.perf_counter() - tic
            if i >= warmup:  # warm-up: kernel compilation, page faults, the buffer cache
                times.append(elapsed)
        return times

    read_times = timed(mx.sum, x, "read kernel (sum)")
    copy_times = timed(lambda a: a + 1.0, x, "copy kernel (x + 1)")
    read_bps = nbytes / min(read_times)
    copy_bps = 2 * nbytes / min(copy_times)
    del x
    mx.clear_cache()
    return {
        "memory_bandwidth_bytes_per_s": max(read_bps, copy_bps),
        "read_bytes_per_s": read_bps,
        "copy_bytes_per_s": copy_bps,
        "size_bytes": nbytes,
        "repeats": repeats,
        "warmup": warmup,
        "read_best_s": min(read_times),
        "copy_best_s": min(copy_times),
        "device": str(mx.default_device()),
    }
