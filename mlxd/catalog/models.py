"""The catalog's tables: models with their lineage, jobs, benchmark runs and trials, systems.

Units live in column names (``_bytes``, ``_s``, ``_tps``) so nobody has to guess.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, TypeDecorator
from sqlmodel import Field, SQLModel

FINISHED_STATUSES = ("succeeded", "failed", "cancelled")
# generate: one stream at a time (or mlx-lm's batch at --batch-size); batch: a batch job's
# prompts (aggregate throughput); serve: mlx_lm.server under concurrent clients.
BENCH_MODES = ("generate", "batch", "serve")


# Byte and parameter counts pass 2**31: BIGINT on PostgreSQL (migration 0008); SQLite's
# INTEGER is 64-bit already, and its tables stay as they were.
class WideInt(TypeDecorator):
    impl = Integer
    cache_ok = True

    def load_dialect_impl(self, dialect):
        return dialect.type_descriptor(BigInteger() if dialect.name != "sqlite" else Integer())


WIDE_INT = WideInt


def utcnow() -> datetime:
    return datetime.now(UTC)


class System(SQLModel, table=True):
    """One machine with one set of software versions: what a benchmark ran on."""

    id: int | None = Field(default=None, primary_key=True)
    fingerprint: str = Field(index=True, unique=True)
    host: str
    os_name: str  # "Darwin", "Linux"
    os_version: str
    cpu: str  # brand string, e.g. "Apple M3 Max" or an x86 model name
    chip: str | None = None  # Apple chip, or the accelerator's device name
    backend: str  # "metal", "cpu", "cuda"
    cores_physical: int | None = None
    cores_logical: int | None = None
    cores_performance: int | None = None
    cores_efficiency: int | None = None
    gpu_cores: int | None = None
    ram_bytes: int | None = Field(default=None, sa_type=WIDE_INT)
    python_version: str
    mlx_version: str
    mlx_lm_version: str
    mlxd_version: str
    created_at: datetime = Field(default_factory=utcnow)


class Model(SQLModel, table=True):
    """A model folder on disk, with where it came from (``parent_id``: lineage)."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    path: str
    format: str  # "hf" or "mlx"
    source: str  # "synth", "local", "convert", "quantize", "gguf", "hub", ...
    architecture: str | None = None
    num_parameters: int | None = Field(default=None, sa_type=WIDE_INT)
    size_bytes: int | None = Field(default=None, sa_type=WIDE_INT)
    dtype: str | None = None
    quant_bits: int | None = None
    quant_group_size: int | None = None
    quant_mode: str | None = None
    quant_recipe: str | None = None
    # How the weights were quantized (migration 0017): rtn, awq, gptq, dwq or dynamic (None on
    # older rows means rtn), and that method's options with its calibration data (sha256,
    # tokens, samples, length).
    quant_method: str | None = None
    quant_options: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    bits_per_weight: float | None = None
    synthetic: bool = False  # random weights: speed figures are real, text is not
    parent_id: int | None = Field(default=None, foreign_key="model.id", index=True)
    created_by_job_id: int | None = Field(default=None, foreign_key="job.id")
    managed: bool = True  # the folder lives under MLXD_HOME/models and is ours to delete
    # Where the files are (migration 0008): the host id that holds them; None for a model on
    # a volume every host sees (MLXD_SHARED_MODELS) or one registered before hosts existed.
    host: str | None = Field(default=None, index=True)
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class Job(SQLModel, table=True):
    """One unit of queued work. Only the id travels through huey; parameters live here."""

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(index=True)
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default="queued", index=True)
    priority: int = 0
    attempts: int = 0
    max_attempts: int = 3
    progress: float = 0.0  # 0..1
    message: str | None = None
    error: str | None = None  # one line; the full story is in the log
    after_job_id: int | None = Field(default=None, foreign_key="job.id", index=True)
    timeout_s: float | None = None
    cancel_requested: bool = False
    submitted_by: str | None = None
    submitted_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    host: str | None = None
    pid: int | None = None  # the job's child process
    daemon_pid: int | None = None
    log_path: str | None = None
    # No foreign key: model.created_by_job_id already points the other way (no FK cycle).
    output_model_id: int | None = None
    result: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # Reliability (migration 0003): the child's start time tells it from a reused pid; daemon
    # deaths during this job (a poison pill at 5) are not charged as attempts; the job's own
    # crashes are retried once, with the reason kept.
    pid_started_at: float | None = None
    interruptions: int = 0
    crashes: int = 0
    crash_reason: str | None = None
    # Scale-out (migration 0008): the pool (a huey queue) the job waits in; ``host`` above is
    # the host id of the daemon that claimed it.
    pool: str = Field(default="default", index=True)
    # Why a queued job waits (migration 0012): a ``vocab.outcomes.Code`` (wait_memory, wait_disk)
    # beside its message, which holds the words; None when it does not wait for room.
    wait_code: str | None = None
    # The lease its holder promised (migration 0013): the seconds without a heartbeat after
    # which the attempt counts as lost. Another host judges the job by it, not by its own.
    lease_s: float | None = None


class BenchRun(SQLModel, table=True):
    """One measured point of a bench job (a job may sweep several points)."""

    id: int | None = Field(default=None, primary_key=True)
    job_id: int | None = Field(default=None, foreign_key="job.id", index=True)
    model_id: int = Field(foreign_key="model.id", index=True)
    system_id: int = Field(foreign_key="system.id", index=True)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    prompt_tokens: int
    gen_tokens: int
    batch_size: int = 1
    depth: int = 0
    kv_bits: int | None = None
    prefill_step_size: int | None = None
    max_kv_size: int | None = None  # a rotating KV cache of this many tokens; None: unbounded
    trials: int
    warmup: int
    seed: int = 0
    load_time_s: float | None = None
    prompt_tps_mean: float | None = None
    prompt_tps_median: float | None = None
    prompt_tps_std: float | None = None
    generation_tps_mean: float | None = None
    generation_tps_median: float | None = None
    generation_tps_std: float | None = None
    ttft_s_mean: float | None = None
    ttft_s_median: float | None = None
    ttft_s_std: float | None = None
    prompt_tps_ci95: float | None = None  # half-width of the 95% confidence interval
    generation_tps_ci95: float | None = None
    ttft_s_ci95: float | None = None
    noisy: bool = False  # a coefficient of variation above the threshold
    # (prompt + generated tokens) / total trial time: llama-bench's -pg figure
    combined_tps_mean: float | None = None
    combined_tps_std: float | None = None
    combined_tps_ci95: float | None = None
    # MLX's own peak (active memory), max over trials
    peak_memory_bytes: int | None = Field(default=None, sa_type=WIDE_INT)
    # MLX active memory after the last trial
    active_memory_bytes: int | None = Field(default=None, sa_type=WIDE_INT)
    # MLX buffer cache after the last trial
    cache_memory_bytes: int | None = Field(default=None, sa_type=WIDE_INT)
    # the OS's view of the process, max over trials
    peak_rss_bytes: int | None = Field(default=None, sa_type=WIDE_INT)
    model_memory_bytes: int | None = Field(default=None, sa_type=WIDE_INT)  # the loaded weights
    # psutil available memory
    system_available_before_bytes: int | None = Field(default=None, sa_type=WIDE_INT)
    system_available_after_bytes: int | None = Field(default=None, sa_type=WIDE_INT)
    power_source: str | None = None  # "ac" | "battery" (macOS)
    low_power_mode: bool | None = None
    thermal_state: str | None = None  # "nominal" | "moderate" | "heavy" | "trapping" | "sleeping"
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # -- generation workloads (0006) --
    mode: str = "generate"  # see BENCH_MODES
    concurrency: int | None = None  # serve: simultaneous clients
    requests: int | None = None  # serve: requests sent; batch: prompts
    errors: int | None = None  # serve: requests that failed
    ttft_p50_s: float | None = None  # serve: per-request time to first token percentiles
    ttft_p95_s: float | None = None
    ttft_p99_s: float | None = None
    itl_p50_s: float | None = None  # serve: inter-token latency percentiles
    itl_p95_s: float | None = None
    itl_p99_s: float | None = None
    request_tps_mean: float | None = None  # serve/batch: output tok/s of one request, mean
    # No foreign keys: a run keeps its figures when the draft model or cache goes.
    draft_model_id: int | None = None
    num_draft_tokens: int | None = None
    acceptance_rate: float | None = None  # share of generated tokens drafted and kept
    draft_speedup: float | None = None  # generation tok/s with the draft / without, same job
    prompt_cache_id: int | None = None
    cached_tokens: int | None = None  # tokens the prompt cache held
    ttft_cached_s_mean: float | None = None  # same suffix, starting from the cache
    # -- adapters (0010): measured as base + this adapter, unfused; None: the model alone --
    adapter_id: int | None = Field(default=None, foreign_key="adapter.id", index=True)


class BenchTrial(SQLModel, table=True):
    """One measured trial of a benchmark run."""

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="benchrun.id", index=True)
    trial_index: int
    prompt_tokens: int
    generated_tokens: int
    prompt_tps: float
    generation_tps: float
    ttft_s: float
    total_s: float
    peak_memory_bytes: int = Field(sa_type=WIDE_INT)
    active_memory_bytes: int | None = Field(default=None, sa_type=WIDE_INT)
    cache_memory_bytes: int | None = Field(default=None, sa_type=WIDE_INT)
    peak_rss_bytes: int | None = Field(default=None, sa_type=WIDE_INT)


class QualityRun(SQLModel, table=True):
    """Perplexity of a model on a fixed text and, against its base, how far its outputs moved."""

    id: int | None = Field(default=None, primary_key=True)
    job_id: int | None = Field(default=None, foreign_key="job.id", index=True)
    model_id: int = Field(foreign_key="model.id", index=True)
    base_model_id: int | None = Field(default=None, foreign_key="model.id")
    system_id: int | None = Field(default=None, foreign_key="system.id")
    created_at: datetime = Field(default_factory=utcnow, index=True)
    text_name: str  # "default" or the file's name
    text_sha256: str
    tokens: int  # tokens scored
    perplexity: float
    base_perplexity: float | None = None
    kl_mean: float | None = None  # mean KL(base || model) per token, nats
    top1_agreement: float | None = None  # fraction of positions with the same argmax
    max_abs_delta_logprob: float | None = None  # of the observed next token
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # (0010) scored as the model + this adapter, unfused; None: the model alone
    adapter_id: int | None = Field(default=None, foreign_key="adapter.id", index=True)


class EvalRun(SQLModel, table=True):
    """Task accuracy of a model (``mlxd eval``): one row per model an eval job scored (the
    model, and its base when the job scored the base too), its items in ``evalitem``.

    ``protocol`` names what was asked (each task's sha256, the item limit, shots and seed):
    two runs with the same protocol scored the same items the same way."""

    id: int | None = Field(default=None, primary_key=True)
    job_id: int | None = Field(default=None, foreign_key="job.id", index=True)
    model_id: int = Field(foreign_key="model.id", index=True)
    base_model_id: int | None = Field(default=None, foreign_key="model.id")
    base_run_id: int | None = Field(default=None, foreign_key="evalrun.id")
    system_id: int | None = Field(default=None, foreign_key="system.id")
    created_at: datetime = Field(default_factory=utcnow, index=True)
    protocol: str = Field(index=True)
    tasks: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    items: int  # items scored, all tasks together
    correct: int
    accuracy: float  # correct / items (multiple choice: acc, not acc_norm)
    accuracy_low: float | None = None  # bootstrap 95% interval over the items
    accuracy_high: float | None = None
    base_accuracy: float | None = None
    accuracy_drop: float | None = None  # base_accuracy - accuracy
    shots: int = 0
    seed: int = 0
    item_limit: int | None = None  # --limit, per task
    synthetic: bool = False  # random weights: the accuracy means nothing
    # {"tasks": {name: {kind, items, acc, acc_low, acc_high, acc_norm, ..., sha256}}, ...}
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class EvalItem(SQLModel, table=True):
    """One item of an eval run: what the model answered and whether it was right."""

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="evalrun.id", index=True)
    task: str
    item: int  # 0-based index among the task's items
    line: int | None = None  # its line in the task file
    correct: bool
    correct_norm: bool | None = None  # multiple choice: by length-normalised log-likelihood
    output: str  # the choice it picked, or its generation
    expected: str  # the right choice, the answer, or the pattern
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class Sweep(SQLModel, table=True):
    """A quantization sweep: one job graph over variants of one base model."""

    id: int | None = Field(default=None, primary_key=True)
    base_model_id: int = Field(foreign_key="model.id", index=True)
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # [{"variant": "4bit-g64", "model": name, "quantize_job": id|None, "bench_job": id,
    #   "quality_job": id, "eval_job": id|None}, ...]
    variants: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    created_at: datetime = Field(default_factory=utcnow)


class Probe(SQLModel, table=True):
    """A measured property of a machine (memory bandwidth), stored once per machine."""

    id: int | None = Field(default=None, primary_key=True)
    host: str = Field(index=True)
    cpu: str
    backend: str
    ram_bytes: int | None = Field(default=None, sa_type=WIDE_INT)
    memory_bandwidth_bytes_per_s: float
    method: str  # how it was measured, e.g. "mlx copy 1 GiB x 10"
    created_at: datetime = Field(default_factory=utcnow)
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class PromptCache(SQLModel, table=True):
    """A saved KV cache of a prompt prefix (mlx-lm's save_prompt_cache), for one exact model."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    path: str  # the .safetensors file
    model_id: int = Field(foreign_key="model.id", index=True)
    # What the weights looked like when the cache was made (mlxd.jobs.cache_prompt).
    model_fingerprint: str
    num_tokens: int
    kv_bits: int | None = None
    size_bytes: int | None = Field(default=None, sa_type=WIDE_INT)
    text_sha256: str
    created_by_job_id: int | None = Field(default=None, foreign_key="job.id")
    created_at: datetime = Field(default_factory=utcnow)
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class HubSnapshot(SQLModel, table=True):
    """Where a pulled model came from: a hub repo at one exact commit, in the HF cache."""

    id: int | None = Field(default=None, primary_key=True)
    model_id: int = Field(foreign_key="model.id", index=True, unique=True)
    repo_id: str = Field(index=True)  # "mlx-community/Qwen3-4B-Instruct-2507-4bit"
    revision: str  # as asked: a branch, a tag or a commit
    commit_sha: str = Field(index=True)  # the 40-hex commit it resolved to
    endpoint: str | None = None  # the hub it came from (HF_ENDPOINT), never a token
    cache_dir: str  # the HF hub cache holding it (HF_HUB_CACHE)
    total_bytes: int = Field(sa_type=WIDE_INT)
    file_count: int
    is_mlx: bool  # already MLX (quantization config or MLX safetensors), else convert it
    pulled_by_job_id: int | None = Field(default=None, foreign_key="job.id")
    verified_at: datetime | None = None  # every file's hash matched the hub's
    created_at: datetime = Field(default_factory=utcnow)
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class HubFile(SQLModel, table=True):
    """One file of a pulled snapshot, with the hash it was verified against."""

    id: int | None = Field(default=None, primary_key=True)
    snapshot_id: int = Field(foreign_key="hubsnapshot.id", index=True)
    path: str  # inside the repo
    size_bytes: int = Field(sa_type=WIDE_INT)
    sha256: str
    lfs: bool  # LFS files are checked against the hub's sha256, others against the git oid


class FinetuneSweep(SQLModel, table=True):
    """A fine-tuning grid: one job per combination of hyper-parameters over one base model."""

    id: int | None = Field(default=None, primary_key=True)
    base_model_id: int = Field(foreign_key="model.id", index=True)
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # [{"adapter": name, "job": id, "fuse_job": id|None, "grid": {"learning_rate": ...}}, ...]
    runs: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class Adapter(SQLModel, table=True):
    """A fine-tuned adapter folder (LoRA, DoRA or full layers) tied to the exact base it fits.

    ``base_weights_sha256`` and ``data_sha256`` are content hashes: an adapter is applied only
    to the weights it was trained on, and its data can be recognised if it moves.
    """

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    path: str
    fine_tune_type: str  # "lora" | "dora" | "full"
    status: str = "training"  # "training" | "ready"; a stopped job leaves "training" + a checkpoint
    base_model_id: int | None = Field(default=None, foreign_key="model.id", index=True)
    base_model_name: str  # kept when the base is removed: errors can still name it
    base_weights_sha256: str | None = None
    base_quantized: bool = False  # QLoRA
    data_path: str
    data_sha256: str | None = None
    job_id: int | None = Field(default=None, foreign_key="job.id", index=True)  # the latest
    sweep_id: int | None = Field(default=None, foreign_key="finetunesweep.id", index=True)
    iterations: int = 0  # trained so far (the latest checkpoint's)
    target_iterations: int
    trainable_parameters: int | None = None
    final_train_loss: float | None = None
    final_val_loss: float | None = None
    test_loss: float | None = None
    test_perplexity: float | None = None
    tokens_per_s: float | None = None  # mean over the run's reports
    iterations_per_s: float | None = None
    peak_memory_bytes: int | None = Field(
        default=None, sa_type=WIDE_INT
    )  # MLX's own peak (active memory)
    train_time_s: float | None = None
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class FinetuneStep(SQLModel, table=True):
    """One training-loss report of a fine-tuning job (every --steps-per-report steps).

    One row per (adapter, iteration): a run resumed from a checkpoint trains the steps after
    it again, and its report replaces the one it repeats (``Store.record_finetune_row``)."""

    __table_args__ = (
        Index("ux_finetunestep_adapter_iteration", "adapter_id", "iteration", unique=True),
    )

    id: int | None = Field(default=None, primary_key=True)
    adapter_id: int = Field(foreign_key="adapter.id", index=True)
    job_id: int | None = Field(default=None, foreign_key="job.id", index=True)
    iteration: int
    train_loss: float
    learning_rate: float
    iterations_per_s: float
    tokens_per_s: float
    trained_tokens: int  # cumulative over the adapter's runs (a resume counts on)
    peak_memory_bytes: int = Field(sa_type=WIDE_INT)
    created_at: datetime = Field(default_factory=utcnow)


class FinetuneEval(SQLModel, table=True):
    """A validation loss during training, or the test loss and perplexity at the end; one
    row per (adapter, split, iteration), as for steps."""

    __table_args__ = (
        Index(
            "ux_finetuneeval_adapter_split_iteration",
            "adapter_id",
            "split",
            "iteration",
            unique=True,
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    adapter_id: int = Field(foreign_key="adapter.id", index=True)
    job_id: int | None = Field(default=None, foreign_key="job.id", index=True)
    split: str  # "valid" | "test"
    iteration: int
    loss: float
    perplexity: float
    eval_time_s: float | None = None
    created_at: datetime = Field(default_factory=utcnow)


def row_from(table: type[SQLModel], result: Any, **values: Any) -> Any:
    """A ``table`` row from a result dataclass (or its dict): every field that has a column of
    the same name, plus ``values``. The one mapping from engine results to catalog rows."""
    fields = result if isinstance(result, dict) else vars(result)
    columns = table.model_fields
    return table(**{k: v for k, v in fields.items() if k in columns}, **values)


class Machine(SQLModel, table=True):
    """A host running a daemon on this catalog: its pools, facts and last sign of life.

    A daemon writes its row when it starts and every housekeeping pass; another daemon that
    sees the heartbeat older than the lease timeout takes the host's running jobs back."""

    host_id: str = Field(primary_key=True)
    hostname: str | None = None
    pools: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    facts: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    daemon_pid: int | None = None
    workers: int = 1
    mlxd_version: str | None = None
    started_at: datetime = Field(default_factory=utcnow)
    heartbeat_at: datetime = Field(default_factory=utcnow)
    stopped_at: datetime | None = None


class JobLog(SQLModel, table=True):
    """A piece of a job's log, shipped into the catalog by the daemon running it when the
    catalog is shared between hosts (PostgreSQL), so ``mlxd jobs logs`` works from any
    machine. The log file in the running host's MLXD_HOME stays the original."""

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", index=True)
    host: str | None = None
    attempt: int = 0
    text: str = ""
    created_at: datetime = Field(default_factory=utcnow)


class ApiUser(SQLModel, table=True):
    """Someone the team server (``mlxd serve``) lets in: a name, a role and the SHA-256 of
    their token (never the token itself). In the catalog, so every host's server knows them."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    role: str  # vocab.choices.ROLES
    token_sha256: str = Field(index=True, unique=True)
    created_at: datetime = Field(default_factory=utcnow)
    created_by: str | None = None
