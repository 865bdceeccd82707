"""The catalog's tables: models with their lineage, jobs, benchmark runs and trials, systems.

Units live in column names (``_bytes``, ``_s``, ``_tps``) so nobody has to guess.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED_STATUSES = ("succeeded", "failed", "cancelled")
MODEL_FORMATS = ("hf", "mlx")


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
    ram_bytes: int | None = None
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
    num_parameters: int | None = None
    size_bytes: int | None = None
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
    peak_memory_bytes: int | None = None  # MLX's own peak (active memory), max over trials
    peak_rss_bytes: int | None = None  # the OS's view of the process, max over trials
    model_memory_bytes: int | None = None
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
    peak_memory_bytes: int
    active_memory_bytes: int | None = None
    cache_memory_bytes: int | None = None
    peak_rss_bytes: int | None = None
