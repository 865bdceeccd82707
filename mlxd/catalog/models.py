"""The catalog's tables: models with their lineage, jobs, benchmark runs and trials, systems.

Units live in column names (``_bytes``, ``_s``, ``_tps``) so nobody has to guess.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Integer, TypeDecorator
from sqlmodel import Field, SQLModel

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED_STATUSES = ("succeeded", "failed", "cancelled")
MODEL_FORMATS = ("hf", "mlx")


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


class Sweep(SQLModel, table=True):
    """A quantization sweep: one job graph over variants of one base model."""

    id: int | None = Field(default=None, primary_key=True)
    base_model_id: int = Field(foreign_key="model.id", index=True)
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # [{"variant": "4bit-g64", "model": name, "quantize_job": id|None, "bench_job": id,
    #   "quality_job": id}, ...]
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
