"""Throughput / latency / memory benchmark of one model over a list of BenchPoints."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from mlxd.jobs.choices import KV_BITS

from .types import BenchPoint, BenchResult, BenchVariant, TrialResult

# mlx-lm's default group size for a quantized KV cache, and the fallback for small heads.
KV_GROUP_SIZES = (64, 32)
# Where the kernel keeps no resettable peak (macOS), RSS is sampled this often.
RSS_SAMPLE_INTERVAL_S = 0.05


def bench_model(
    path: Path,
    points: list[BenchPoint],
    *,
    trials: int = 3,
    warmup: int = 1,
    seed: int = 0,
    delay_s: float = 0.0,
    on_trial: Callable[[TrialResult], None] | None = None,
    on_progress: Callable[[float, str], None] | None = None,
    variants: Sequence[BenchVariant] | None = None,
) -> BenchResult:
    """Load the model once, then run `warmup` unrecorded and `trials` recorded runs per point.

    Prompts are random ids from the tokenizer's ordinary vocabulary (no special tokens), drawn
    from `seed`; EOS is ignored so every run generates exactly gen_tokens tokens per sequence.
    For batch_size > 1 the token counts and tok/s figures are totals over the batch.

    With ``variants`` (e.g. a base, the base with an unfused adapter, the fused model) every
    variant is loaded once (an adapter variant shares its base's weights when the base is
    also a variant) and each run goes to all of them in turn, with the same prompt, the
    order rotating from run to run: drift touches every side alike, so their ratios are fair.
    Each trial then names its variant, and its memory figures are the variant's own: its
    weights plus what the trial added on top of the memory already in use (the other
    variants' weights are not counted against it).
    """
    for point in points:
        _check_point(point)
    if trials < 1 or warmup < 0:
        raise ValueError("trials must be at least 1 and warmup at least 0.")

    import mlx.core as mx

    progress = on_progress or (lambda _fraction, _message: None)
    side_by_side = bool(variants)
    sides = list(variants) if variants else [BenchVariant("model", str(path))]
    loaded = []  # (variant, model, tokenizer, config, load seconds)
    for v in sides:
        progress(0.0, f"loading {v.label}: {v.path}" if side_by_side else f"loading {path}")
        tic = time.perf_counter()
        model, tokenizer, config = _load_variant(v, loaded)
        loaded.append((v, model, tokenizer, config, time.perf_counter() - tic))
    _, first_model, first_tokenizer, first_config, _ = loaded[0]
    for _, _, tokenizer, _, _ in loaded:
        # No EOS: every run must produce exactly the requested number of tokens.
        tokenizer.eos_token_ids = set()
    token_pool = _token_pool(first_tokenizer, first_config)
    needs_kv_group = any(p.kv_bits is not None for p in points)
    kv_group_size = (
        _kv_group_size(first_model, first_config) if needs_kv_group else KV_GROUP_SIZES[0]
    )
    mx.random.seed(seed)
    result = _empty_result(loaded, side_by_side)
    runs = _Runs(len(points) * (warmup + trials) * len(loaded), progress)
    for point_index, point in enumerate(points):
        rng = np.random.default_rng([seed, point_index])
        for run in range(warmup + trials):
            # Each run goes to every variant, the order rotating from run to run.
            turn = run % len(loaded)
            for v, model, tokenizer, _, _ in loaded[turn:] + loaded[:turn]:
                runs.announce(point, run, warmup, trials, v.label if side_by_side else None)
                if run >= warmup and delay_s > 0:
                    time.sleep(delay_s)
                # Side by side, every variant gets the same prompt of this run.
                run_rng = np.random.default_rng([seed, point_index, run]) if side_by_side else rng
                before = mx.get_active_memory()
                trial = _run_once(model, tokenizer, point, run_rng, token_pool, kv_group_size)
                runs.done += 1
                if run < warmup:
                    continue
                trial = replace(trial, trial_index=run - warmup)
                if side_by_side:
                    trial = _own_memory(trial, v.label, result, before)
                result.trials.append(trial)
                if on_trial is not None:
                    on_trial(trial)
    progress(1.0, "done")
    return result


class _Runs:
    """Progress over all runs of all points (and variants)."""

    def __init__(self, total: int, progress: Callable[[float, str], None]):
        self.total, self.done, self.progress = total, 0, progress

    def announce(self, point: BenchPoint, run: int, warmup: int, trials: int, variant) -> None:
        label = (
            f"p={point.prompt_tokens} g={point.gen_tokens} b={point.batch_size}"
            f" depth={point.depth} kv_bits={point.kv_bits}"
        )
        what = (
            f"trial {run - warmup + 1}/{trials}" if run >= warmup else f"warmup {run + 1}/{warmup}"
        )
        self.progress(
            self.done / self.total, f"{label}: {what}" + (f" ({variant})" if variant else "")
        )


def _weights_bytes(model) -> int:
    from mlx.utils import tree_flatten

    return int(sum(v.nbytes for _, v in tree_flatten(model.parameters())))


def _empty_result(loaded: list, side_by_side: bool) -> BenchResult:
    """The result before its trials: the (first) model's figures, each variant's too."""
    from mlx_lm.utils import compute_bits_per_weight, get_total_parameters

    from .backend import backend_facts

    _, first_model, _, _, load_time_s = loaded[0]
    facts = backend_facts()
    result = BenchResult(
        load_time_s=load_time_s,
        trials=[],
        model_memory_bytes=_weights_bytes(first_model),
        num_parameters=int(get_total_parameters(first_model)),
        bits_per_weight=float(compute_bits_per_weight(first_model)),
        backend=facts["backend"],
        mlx_version=facts["mlx_version"],
        mlx_lm_version=facts["mlx_lm_version"],
    )
    if side_by_side:
        result.variants = {
            v.label: {
                "load_time_s": seconds,
                "model_memory_bytes": _weights_bytes(model),
                "num_parameters": int(get_total_parameters(model)),
                "bits_per_weight": float(compute_bits_per_weight(model)),
            }
            for v, model, _, _, seconds in loaded
        }
    return result


def _own_memory(trial: TrialResult, label: str, result: BenchResult, before: int) -> TrialResult:
    """A variant's trial, its memory its own: its weights plus what the trial added on top
    of the memory in use before it (the other variants' weights not counted)."""
    own = result.variants[label]["model_memory_bytes"]
    return replace(
        trial,
        variant=label,
        peak_memory_bytes=own + max(trial.peak_memory_bytes - before, 0),
        active_memory_bytes=own + max(trial.active_memory_bytes - before, 0),
    )


def _load_variant(v: BenchVariant, loaded: list) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, config) of a variant. An adapter variant whose base is already
    loaded (a variant of the same folder without adapter) shares the base's weight arrays:
    one copy of the weights in memory, plus the adapter's own."""
    from mlx_lm import load

    if v.adapter_path is not None:
        for other, base, tokenizer, config, _ in loaded:
            if other.adapter_path is None and other.path == v.path:
                from mlx_lm.utils import load_adapters, load_model

                model, _ = load_model(Path(v.path), lazy=True)  # no weights read
                model.update(base.parameters())
                model = load_adapters(model, v.adapter_path)
                model.eval()
                return model, tokenizer, config
    return load(str(v.path), adapter_path=v.adapter_path, return_config=True)


def _check_point(point: BenchPoint) -> None:
    if point.prompt_tokens < 1 or point.gen_tokens < 1 or point.batch_size < 1:
        raise ValueError("prompt_tokens, gen_tokens and batch_size must be at least 1.")
    if point.depth < 0 or point.prefill_step_size < 1:
        raise ValueError("depth must be at least 0 and prefill_step_size at least 1.")
    if point.kv_bits is not None and point.kv_bits not in KV_BITS:
        raise ValueError(
            f"kv_bits must be one of {'/'.join(map(str, KV_BITS))}, not {point.kv_bits}."
        )
    if point.batch_size > 1 and (point.depth or point.kv_bits is not None):
        # mlx-lm's BatchGenerator has no quantized KV cache, and a shared depth would need
        # per-sequence caches: measure those at batch size 1.
        raise ValueError("depth and kv_bits are supported only with batch_size 1.")


def _token_pool(tokenizer: Any, config: dict[str, Any]) -> np.ndarray:
    """Ids a random prompt may use: ordinary tokens known to both tokenizer and embedding."""
    vocab_size = config.get("vocab_size") or config["text_config"]["vocab_size"]
    size = min(vocab_size, len(tokenizer.get_vocab()))
    special = set(tokenizer.all_special_ids)
    special.update(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    pool = np.array([i for i in range(size) if i not in special], dtype=np.int64)
    if pool.size == 0:
        raise ValueError("The tokenizer has no ordinary tokens to build a prompt from.")
    return pool


def _kv_group_size(model: Any, config: dict[str, Any]) -> int:
    """Largest usual KV quantization group that divides the head dimension (keys are grouped
    along it); tiny models have heads narrower than mlx-lm's default 64."""
    head_dim = config.get("head_dim")
    if not head_dim:
        try:
            head_dim = model.layers[0].self_attn.head_dim
        except AttributeError:
            head_dim = config["hidden_size"] // config["num_attention_heads"]
    for group in KV_GROUP_SIZES:
        if head_dim % group == 0:
            return group
    raise ValueError(
        f"A quantized KV cache needs a head dimension divisible by 32, not {head_dim}."
    )


def _run_once(
    model: Any,
    tokenizer: Any,
    point: BenchPoint,
    rng: np.random.Generator,
    pool: np.ndarray,
    kv_group_size: int,
) -> TrialResult:
    import mlx.core as mx

    prompts = rng.choice(pool, size=(point.batch_size, point.prompt_tokens)).tolist()
    prompt_cache = _prefilled_cache(model, point, rng, pool, kv_group_size) if point.depth else None
    mx.reset_peak_memory()
    with _RssSampler() as rss:
        if point.batch_size == 1:
            timed = _stream_one(model, tokenizer, prompts[0], point, prompt_cache, kv_group_size)
        else:
            timed = _batch(model, tokenizer, prompts, point)
    ttft_s, total_s, prompt_tps, generation_tps, prompt_tokens, generated = timed
    return TrialResult(
        point=point,
        trial_index=0,
        prompt_tps=float(prompt_tps),
        generation_tps=float(generation_tps),
        ttft_s=ttft_s,
        total_s=total_s,
        peak_memory_bytes=int(mx.get_peak_memory()),
        active_memory_bytes=int(mx.get_active_memory()),
        cache_memory_bytes=int(mx.get_cache_memory()),
        peak_rss_bytes=rss.peak,
        prompt_tokens=int(prompt_tokens),
        generated_tokens=int(generated),
    )


def _prefilled_cache(model, point: BenchPoint, rng, pool: np.ndarray, kv_group_size: int):
    """Untimed: `depth` tokens already sit in the KV cache when the measured prompt arrives."""
    import mlx.core as mx
    from mlx_lm.generate import maybe_quantize_kv_cache
    from mlx_lm.models.cache import make_prompt_cache

    prompt_cache = make_prompt_cache(model, max_kv_size=point.max_kv_size)
    context = mx.array(rng.choice(pool, size=point.depth))
    for start in range(0, point.depth, point.prefill_step_size):
        model(context[None, start : start + point.prefill_step_size], cache=prompt_cache)
        mx.eval([c.state for c in prompt_cache])
    # Quantize now so the conversion is not timed as part of the measured prompt.
    maybe_quantize_kv_cache(prompt_cache, 0, kv_group_size, point.kv_bits)
    mx.eval([c.state for c in prompt_cache])
    return prompt_cache


def _stream_one(model, tokenizer, prompt, point: BenchPoint, prompt_cache, kv_group_size: int):
    """One sequence, streamed: (ttft_s, total_s, prompt_tps, generation_tps, prompt tokens,
    generated tokens)."""
    from mlx_lm import stream_generate

    tic = time.perf_counter()
    ttft_s = 0.0
    response = None
    kv_args: dict[str, Any] = {}
    if point.kv_bits is not None:
        kv_args = {
            "kv_bits": point.kv_bits,
            "kv_group_size": kv_group_size,
            "quantized_kv_start": 0,
        }
    for response in stream_generate(
        model,
        tokenizer,
        prompt,
        max_tokens=point.gen_tokens,
        prompt_cache=prompt_cache,
        prefill_step_size=point.prefill_step_size,
        # With a pre-filled cache the cache already has its size.
        **({"max_kv_size": point.max_kv_size} if prompt_cache is None else {}),
        **kv_args,
    ):
        if response.generation_tokens == 1:
            ttft_s = time.perf_counter() - tic
    total_s = time.perf_counter() - tic
    assert response is not None
    return (
        ttft_s,
        total_s,
        response.prompt_tps,
        response.generation_tps,
        response.prompt_tokens,
        response.generation_tokens,
    )


def _batch(model, tokenizer, prompts, point: BenchPoint):
    """A batch through mlx-lm's batch API: the same figures as ``_stream_one``, totals."""
    from mlx_lm import batch_generate

    tic = time.perf_counter()
    stats = batch_generate(
        model,
        tokenizer,
        prompts,
        max_tokens=point.gen_tokens,
        prefill_step_size=point.prefill_step_size,
    ).stats
    total_s = time.perf_counter() - tic
    # The batch API reports no per-token times; its prompt phase ends at the first tokens.
    return (
        stats.prompt_time,
        total_s,
        stats.prompt_tps,
        stats.generation_tps,
        stats.prompt_tokens,
        stats.generation_tokens,
    )


class _RssSampler:
    """Peak RSS of this process while the block runs (psutil has no resettable peak).

    On Linux the kernel keeps the peak (VmHWM) and lets a process reset it: exact, and no
    thread. Elsewhere a thread samples RSS; not too often, since each sample takes the GIL
    from the token loop it is measuring (every 5 ms cost ~10% of generation speed here).
    """

    def __init__(self, interval_s: float = RSS_SAMPLE_INTERVAL_S) -> None:
        import psutil

        self._process = psutil.Process()
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._kernel_peak = False
        self.peak = 0

    def _read(self) -> None:
        self.peak = max(self.peak, self._process.memory_info().rss)

    def _sample(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._read()

    def __enter__(self) -> _RssSampler:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
            self._kernel_peak = _vm_hwm_bytes() is not None
        except OSError:
            self._kernel_peak = False
        if not self._kernel_peak:
            self._read()
            self._thread = threading.Thread(target=self._sample, name="mlxd-rss", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._kernel_peak:
            self.peak = _vm_hwm_bytes() or 0
            return
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self._read()


def _vm_hwm_bytes() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        return None
    return None
