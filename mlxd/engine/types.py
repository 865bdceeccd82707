"""Plain result types of the engine (no mlx import): JSON-serialisable via dataclasses.asdict."""

from __future__ import annotations

from dataclasses import dataclass, field

from mlxd.vocab.choices import DEFAULT_PREFILL_STEP_SIZE


@dataclass(frozen=True)
class BenchPoint:
    """One benchmark configuration: prompt and generation lengths plus cache settings."""

    prompt_tokens: int
    gen_tokens: int
    batch_size: int = 1
    depth: int = 0
    kv_bits: int | None = None
    prefill_step_size: int = DEFAULT_PREFILL_STEP_SIZE
    max_kv_size: int | None = None  # a rotating KV cache of this many tokens


@dataclass
class TrialResult:
    """One measured trial of a BenchPoint.

    peak/active/cache_memory_bytes are MLX's own counters (peak counts active memory only,
    not MLX's buffer cache); peak_rss_bytes is the OS resident set size of the process.
    """

    point: BenchPoint
    trial_index: int
    prompt_tps: float
    generation_tps: float
    ttft_s: float
    total_s: float
    peak_memory_bytes: int
    active_memory_bytes: int
    cache_memory_bytes: int
    peak_rss_bytes: int
    prompt_tokens: int
    generated_tokens: int
    variant: str | None = None  # which BenchVariant, when several are measured side by side


@dataclass(frozen=True)
class BenchVariant:
    """One side of a side-by-side bench: a model folder, optionally with an unfused adapter."""

    label: str  # "base", "adapter", "fused"
    path: str
    adapter_path: str | None = None


@dataclass
class BenchResult:
    """All trials of one bench_model call."""

    load_time_s: float
    trials: list[TrialResult]
    model_memory_bytes: int
    num_parameters: int = 0
    bits_per_weight: float = 0.0
    backend: str = ""
    mlx_version: str = ""
    mlx_lm_version: str = ""
    # With variants: label -> load_time_s, model_memory_bytes, num_parameters, bits_per_weight
    variants: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class QuantizeResult:
    """What quantize_model produced."""

    bits_per_weight: float
    num_parameters: int
    bits: int
    group_size: int
    mode: str
    recipe: str | None = None
    dtype: str | None = None


@dataclass
class GenerationStats:
    """Figures of one generate_stream run, final once iteration has ended."""

    prompt_tokens: int = 0
    generated_tokens: int = 0
    prompt_tps: float = 0.0
    generation_tps: float = 0.0
    peak_memory_bytes: int = 0
    finish_reason: str | None = None
    ttft_s: float = 0.0  # from the call to the first generated token
    total_s: float = 0.0
    cached_tokens: int = 0  # tokens a prompt cache held before this prompt
    draft_accepted_tokens: int | None = None  # with a draft model: its tokens kept
    draft_proposed_tokens: int | None = None  # with a draft model: tokens it proposed

    @property
    def acceptance_rate(self) -> float | None:
        """Share of the draft model's proposed tokens that the model kept (None without one)."""
        if self.draft_accepted_tokens is None or not self.draft_proposed_tokens:
            return None
        return self.draft_accepted_tokens / self.draft_proposed_tokens


@dataclass
class PromptCacheInfo:
    """What make_cache_file saved."""

    num_tokens: int
    size_bytes: int
    prefill_s: float
    kv_bits: int | None = None
    kv_group_size: int | None = None


@dataclass
class BatchItemResult:
    """One prompt of a batch run."""

    index: int
    text: str
    token_ids: list[int]
    prompt_tokens: int
    generated_tokens: int
    tokens_per_s: float | None  # from its first token to its last
    ttft_s: float | None  # from the start of the batch
    finish_reason: str | None


@dataclass
class BatchRunResult:
    """A whole batch: items in input order, throughput over the batch."""

    items: list[BatchItemResult]
    batch_size: int
    prompt_tokens: int
    generation_tokens: int
    prompt_tps: float
    generation_tps: float
    wall_s: float
    peak_memory_bytes: int
    load_time_s: float
    model_memory_bytes: int
    cached_tokens: int | None = None


@dataclass
class ServeRequestResult:
    """One streaming request against the server."""

    ttft_s: float | None = None
    total_s: float = 0.0
    prompt_tokens: int = 0
    output_tokens: int = 0
    itl_s: list[float] = field(default_factory=list)  # gaps between streamed tokens
    tokens_per_s: float | None = None  # this request's own output speed
    error: str | None = None


@dataclass
class ServeLevelResult:
    """Every request at one concurrency."""

    concurrency: int
    wall_s: float
    requests: list[ServeRequestResult]


@dataclass
class QualityResult:
    """Figures over ``tokens`` scored positions; the base fields are None without a base."""

    tokens: int  # positions scored (next-token predictions)
    perplexity: float
    base_perplexity: float | None
    kl_mean: float | None  # mean KL(base || model) per position, nats
    top1_agreement: float | None  # fraction of positions where both argmaxes agree
    max_abs_delta_logprob: float | None  # of the actual next token, nats
    text_sha256: str  # of the whole text (UTF-8), before truncation


def trial_from_dict(d: dict) -> TrialResult:
    """A TrialResult back from its JSON form (as it crossed the child's pipe)."""
    return TrialResult(**{**d, "point": BenchPoint(**d["point"])})
