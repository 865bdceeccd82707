"""Admission control: will this job fit in memory and on disk?

An estimate from the catalog and the model's config.json (no MLX): the weights read, the
weights written at the target precision, the KV cache for the longest context a bench asks
for, plus a margin. Compared with the machine's memory budget (``MLXD_MEMORY_BUDGET_BYTES``,
default 75% of RAM: on a Mac, roughly the GPU's default wired-memory share) and free disk.

- A job that can never fit (more than the whole budget) is refused at submit with both
  figures; a daemon refuses it at start the same way (its budget may be smaller).
- One that fits the budget but not what running jobs leave of it waits (``waiting: memory``
  in ``jobs list``), so memory-heavy jobs run one at a time even with ``--workers 2``.
- ``MLXD_QUEUE_LIMIT_PER_USER`` (off unless set) refuses a user's flood politely.

``catalog`` below is anything with ``find_model(ref)`` and ``paths``: the submit reads
through the fast ``Reader``, the daemon through its ``Store``.
"""

from __future__ import annotations

import json
import os
import shutil
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlxd.scheduling.errors import DoesNotFit, QueueFull
from mlxd.vocab import settings
from mlxd.vocab.fmt import size as human_bytes  # one byte format everywhere

MARGIN = 1.2  # MLX's buffers, the Python process, activations


@dataclass
class Estimate:
    memory_bytes: int
    disk_bytes: int
    parts: str  # how the memory figure was made, for the message
    disk_path: Path | None = None  # where the disk bytes go (default: the models folder)

    def describe(self) -> str:
        return f"about {human_bytes(self.memory_bytes)} of memory ({self.parts})"


def free_bytes(path: Path) -> int:
    """Free space where ``path`` lives (the nearest existing parent)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def memory_budget_bytes() -> int:
    """MLXD_MEMORY_BUDGET_BYTES, else 75% of RAM (psutil is imported only then)."""
    value = settings.MEMORY_BUDGET_BYTES.get()
    if value:
        return value
    import psutil

    return int(psutil.virtual_memory().total * 0.75)


def queue_limit_per_user() -> int | None:
    return settings.QUEUE_LIMIT_PER_USER.get()


def _config(path: str | None) -> dict[str, Any]:
    try:
        return json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError, TypeError):
        return {}


def _kv_bytes_per_token(cfg: dict[str, Any], dtype_bytes: int) -> int:
    layers = cfg.get("num_hidden_layers") or 0
    heads = cfg.get("num_attention_heads") or 1
    kv_heads = cfg.get("num_key_value_heads") or heads
    head_dim = cfg.get("head_dim") or (cfg.get("hidden_size") or 0) // heads
    return 2 * layers * kv_heads * head_dim * dtype_bytes


def estimate(kind: str, params: dict[str, Any], catalog) -> Estimate | None:
    """The job's memory and disk needs, or None when they cannot be known yet (its model is
    made by a job that has not run, or the kind is not estimated)."""
    model = None
    ref = params.get("model_id") if params.get("model_id") is not None else params.get("model")
    if ref is not None:
        model = catalog.find_model(ref)
        if model is None or not model.size_bytes:
            return None
    if kind == "convert":
        out = (model.num_parameters or 0) * (
            2 if params.get("dtype") in ("float16", "bfloat16") else 4
        ) or model.size_bytes
        return Estimate(
            int((model.size_bytes + out) * MARGIN),
            out,
            f"weights {human_bytes(model.size_bytes)} read + {human_bytes(out)} written",
        )
    if kind == "quantize":
        bits = params.get("bits") or 4
        out = int((model.num_parameters or model.size_bytes / 2) * (bits + 1) / 8)
        return Estimate(
            int((model.size_bytes + out) * MARGIN),
            out,
            f"weights {human_bytes(model.size_bytes)} read + {human_bytes(out)} at {bits} bits",
        )
    if kind == "bench":
        cfg = _config(model.path)
        per_token = _kv_bytes_per_token(cfg, 4 if (model.dtype or "") == "float32" else 2)
        context = max(
            (p + g + d) * b
            for p in params.get("prompt_tokens") or [512]
            for g in params.get("gen_tokens") or [128]
            for d in params.get("depth") or [0]
            for b in params.get("batch_size") or [1]
        )
        kv = per_token * context
        return Estimate(
            int((model.size_bytes + kv) * MARGIN),
            0,
            f"weights {human_bytes(model.size_bytes)} + KV cache {human_bytes(kv)} "
            f"for {context} tokens",
        )
    if kind == "quality":
        base = catalog.find_model(params["base_id"]) if params.get("base_id") else None
        both = model.size_bytes + (base.size_bytes or 0 if base else 0)
        return Estimate(int(both * MARGIN), 0, f"model and base weights {human_bytes(both)}")
    if kind == "eval":  # the model, then its base: one at a time
        base = catalog.find_model(params["base_id"]) if params.get("base_id") else None
        most = max(model.size_bytes, (base.size_bytes or 0) if base else 0)
        return Estimate(int(most * MARGIN), 0, f"weights {human_bytes(most)}, one model at a time")
    if kind == "finetune":
        return _finetune_estimate(params, model, catalog)
    if kind == "fuse":
        out = (model.num_parameters or 0) * 4 if params.get("dequantize") else model.size_bytes
        return Estimate(
            int((model.size_bytes + out) * MARGIN),
            out,
            f"weights {human_bytes(model.size_bytes)} read + {human_bytes(out)} written",
        )
    if kind == "import_gguf":
        try:
            size = Path(params["file"]).stat().st_size
        except (OSError, KeyError, TypeError):
            return None
        out = size * (8 if params.get("dequantize") else 1)
        return Estimate(int((size + out) * MARGIN), out, f"GGUF {human_bytes(size)} + output")
    return None


def _finetune_estimate(params: dict[str, Any], model, catalog) -> Estimate:
    """A fine-tune's memory: the weights, plus (full fine-tuning) a gradient and two Adam
    moments per weight in float32, plus the activations of a batch (LoRA trains a few million
    numbers at most: its share is in the margin). Its disk: the adapter and every checkpoint
    it keeps (weights plus the optimizer's state, about twice the weights for Adam), in
    MLXD_HOME/adapters."""
    cfg = _config(model.path)
    full = params.get("fine_tune_type") == "full"
    train = (model.num_parameters or model.size_bytes // 2) * 12 if full else 0
    acts = (
        _kv_bytes_per_token(cfg, 4)
        * (params.get("batch_size") or 4)
        * (params.get("max_seq_length") or 2048)
    )
    trainable = _trainable_parameters(params, cfg)
    iters = int(params.get("iters") or 1000)
    every = int(params.get("save_every") or 0)
    checkpoints = iters // every if every > 0 else 0
    disk = trainable * 4 * (1 + 3 * checkpoints)  # float32; adapter file + checkpoints
    return Estimate(
        int((model.size_bytes + train + acts) * MARGIN),
        disk,
        f"weights {human_bytes(model.size_bytes)}"
        + (f" + gradients and optimizer state {human_bytes(train)}" if train else "")
        + f" + activations {human_bytes(acts)}",
        Path(catalog.paths.home) / "adapters",
    )


def _trainable_parameters(params: dict[str, Any], cfg: dict[str, Any]) -> int:
    """Trainable parameters per the config: LoRA/DoRA on every linear layer of the last
    num_layers blocks (rank x (in + out) each), or those blocks whole (full)."""
    h = cfg.get("hidden_size") or 0
    inter = cfg.get("intermediate_size") or 4 * h
    heads = cfg.get("num_attention_heads") or 1
    head_dim = cfg.get("head_dim") or h // heads
    kv = (cfg.get("num_key_value_heads") or heads) * head_dim
    q = heads * head_dim
    linears = [(h, q), (h, kv), (h, kv), (q, h), (h, inter), (h, inter), (inter, h)]
    layers = cfg.get("num_hidden_layers") or 0
    n = params.get("num_layers")
    n = min(16, layers) if n is None else (layers if n == -1 else min(int(n), layers))
    if params.get("fine_tune_type") == "full":
        per_layer = sum(i * o for i, o in linears) + 2 * h
    else:
        per_layer = sum(int(params.get("rank") or 8) * (i + o) for i, o in linears)
    return per_layer * n


# Who submits: the OS user, unless a server acts for the principal it authenticated
# (``mlxd serve`` sets this around the command it runs for a request).
ACTING_USER: ContextVar[str | None] = ContextVar("mlxd_acting_user", default=None)


def current_user() -> str | None:
    """Who submits and cancels: the principal a server acts for, else the OS user."""
    acting = ACTING_USER.get()
    if acting is not None:
        return acting
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001  no passwd entry in some containers
        return os.environ.get("USER")


def check_queue_limit(user: str | None, mine: int, adding: int = 1) -> None:
    """Refuse ``user``, who has ``mine`` jobs queued or running, when ``adding`` more would
    pass the limit (a graph asks once for all its jobs: all of them are queued, or none)."""
    limit = queue_limit_per_user()
    if limit is None or mine + adding <= limit:
        return
    if adding == 1:
        raise QueueFull(
            f"{user} already has {mine} job(s) queued or running, the limit per user "
            f"({settings.QUEUE_LIMIT_PER_USER.name}={limit}); wait for some to finish"
        )
    raise QueueFull(
        f"{user} already has {mine} job(s) queued or running and this command queues "
        f"{adding} more, past the limit per user ({settings.QUEUE_LIMIT_PER_USER.name}={limit}); "
        + ("wait for some to finish" if mine else "queue fewer at once")
    )


def _within_budget(est: Estimate, whose: str, hint: str = "") -> int:
    """The memory budget; DoesNotFit when ``est`` can never fit it."""
    budget = memory_budget_bytes()
    if est.memory_bytes > budget:
        raise DoesNotFit(
            f"this job needs {est.describe()}; {whose} budget is {human_bytes(budget)} "
            f"({settings.MEMORY_BUDGET_BYTES.name}{hint})"
        )
    return budget


def check_at_submit(est: Estimate | None, models_path: Path) -> str | None:
    """Refuse what can never fit this machine (DoesNotFit); a note about disk, or None."""
    if est is None:
        return None
    _within_budget(est, "this machine's", ", default 75% of RAM")
    free = free_bytes(est.disk_path or models_path)
    if est.disk_bytes > free:
        return (
            f"it needs about {human_bytes(est.disk_bytes)} of disk and "
            f"{human_bytes(free)} is free; it waits until there is room"
        )
    return None


def decide(est: Estimate | None, in_use_bytes: int, models_path: Path):
    """At start: None to run now, else why it waits (a ``vocab.outcomes.Wait``: its code and
    'waiting: memory ...'). Raises DoesNotFit for a job that can never fit this daemon's
    budget."""
    # The daemon's reason codes (only the daemon calls this; the codes belong with the
    # vocabulary every room shares once it is at the bottom).
    from mlxd.vocab.outcomes import Code, Wait

    if est is None:
        return None
    budget = _within_budget(est, "the daemon's")
    if in_use_bytes and est.memory_bytes > budget - in_use_bytes:
        return Wait(
            Code.WAIT_MEMORY,
            f"waiting: memory (needs {human_bytes(est.memory_bytes)}; running jobs hold "
            f"{human_bytes(in_use_bytes)} of the {human_bytes(budget)} budget)",
        )
    # The reserve is the floor a running job stops at; to start, the output must fit.
    where = est.disk_path or models_path
    if est.disk_bytes and est.disk_bytes > free_bytes(where):
        return Wait(
            Code.WAIT_DISK,
            f"waiting: disk (needs {human_bytes(est.disk_bytes)}; "
            f"{human_bytes(free_bytes(where))} free at {where})",
        )
    return None
